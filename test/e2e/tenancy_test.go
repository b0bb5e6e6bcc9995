package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestTwoCertificatesOneName: two Certificates that validate the same name through one load
// balancer, created at the same moment, both become Ready; the load balancer serves one
// tls-alpn-01 certificate per name, so one waits for the other, and neither's cleanup removes
// the other's response. A third, in another namespace, uses the load balancer through its
// owner's opt-in.
func TestTwoCertificatesOneName(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-overlap", 0)
	elsewhere := testenv.Namespace(t, "e2e-overlap-other")
	if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: elsewhere}}); err != nil {
		t.Fatal(err)
	}
	allowNamespaces(t, s, elsewhere)

	first := s.TLSALPN01Certificate("first", "shared.overlap.test", "first.overlap.test")
	second := s.TLSALPN01Certificate("second", "shared.overlap.test")
	third := s.TLSALPN01Certificate("third", "shared.overlap.test")
	third.Namespace = elsewhere
	third.Spec.Solver.TLSALPN01.LoadBalancer.Namespace = s.Namespace
	certs := []*certpilotv1alpha1.Certificate{first, second, third}
	for _, cert := range certs {
		if err := kube.Client.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
	}
	for _, cert := range certs {
		waitReady(t, cert, 3*time.Minute, "")
		verifySecret(t, s.Pebble, cert)
	}
	// No validation failed (Pebble may reuse a valid authorization, so there may be fewer):
	// no Certificate lost its response to another.
	if n := s.Pebble.ValidationAttempts("shared.overlap.test"); n > len(certs) {
		t.Errorf("Pebble validated shared.overlap.test %d times for %d Certificates; each failed attempt costs rate limit", n, len(certs))
	}
	for _, cert := range certs {
		if cert.Status.FailedIssuanceAttempts != 0 {
			t.Errorf("%s/%s failed %d times", cert.Namespace, cert.Name, cert.Status.FailedIssuanceAttempts)
		}
	}
	waitNoChallengeResponses(t, s)
}

// TestLoadBalancerOfAnotherNamespace: a Certificate that names another namespace's load
// balancer without its owner's opt-in is Stalled, and nothing in that namespace changes; with
// the opt-in it is issued.
func TestLoadBalancerOfAnotherNamespace(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-tenant", 0)
	tenant := testenv.Namespace(t, "e2e-tenant-b")
	if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenant}}); err != nil {
		t.Fatal(err)
	}
	before := namespaceObjects(t, s.Namespace)

	cert := s.TLSALPN01Certificate("intruder", "intruder.tenant.test")
	cert.Namespace = tenant
	cert.Spec.Solver.TLSALPN01.LoadBalancer.Namespace = s.Namespace
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "Stalled LoadBalancerNotAllowed", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		stalled := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled)
		if stalled == nil || stalled.Reason != "LoadBalancerNotAllowed" {
			return fmt.Errorf("conditions %+v", cert.Status.Conditions)
		}
		return nil
	})
	stalled := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled)
	t.Logf("Stalled: %s", stalled.Message)
	if want := certpilotv1alpha1.AnnotationAllowedNamespaces; !containsAll(stalled.Message, want, tenant) {
		t.Errorf("the condition does not say which annotation to set: %q", stalled.Message)
	}
	if cert.Status.Order != nil || s.Pebble.OrderCount() != 0 {
		t.Errorf("an order was opened before the tenant boundary was checked: %+v", cert.Status.Order)
	}
	if after := namespaceObjects(t, s.Namespace); !slices.Equal(before, after) {
		t.Errorf("objects in the load balancer's namespace changed:\nbefore %v\nafter  %v", before, after)
	}

	// A probe address the load balancer's owner did not list is refused too: the controller
	// would dial it.
	prober := s.TLSALPN01Certificate("prober", "prober.tenant.test")
	prober.Spec.Solver.TLSALPN01.ProbeAddress = testenv.FreeAddress(t)
	if err := kube.Client.Create(ctx, prober); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "Stalled ProbeAddressNotAllowed", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(prober), prober); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(prober.Status.Conditions, certpilotv1alpha1.ConditionStalled); c == nil || c.Reason != "ProbeAddressNotAllowed" ||
			!strings.Contains(c.Message, certpilotv1alpha1.AnnotationProbeAddresses) {
			return fmt.Errorf("conditions %+v", prober.Status.Conditions)
		}
		return nil
	})
	if prober.Status.Order != nil || s.Pebble.OrderCount() != 0 {
		t.Errorf("an order was opened for an unlisted probe address: %+v", prober.Status.Order)
	}

	// The load balancer's owner opts in: the same Certificate is issued.
	allowNamespaces(t, s, tenant)
	waitReady(t, cert, 2*time.Minute, "")
	verifySecret(t, s.Pebble, cert)
}

// TestUpgradeFromTheSingleChallengeSecret: a load balancer set up by an earlier version (it
// mounts the single Secret <deployment>-acme-challenges and its edge reads only that) keeps
// validating through the upgrade; certpilot moves the Deployment to the projected shards.
func TestUpgradeFromTheSingleChallengeSecret(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	legacyName := certpilotv1alpha1.ChallengeSecretName(testenv.EdgeDeployment)
	s := startStackOptions(t, "e2e-upgrade", testenv.PebbleOptions{NonceRejectPercent: 5},
		testenv.StackOptions{EdgeChallengeArgs: []string{"--challenge-secret", legacyName}})

	// What the earlier version left: the single Secret and certpilot's volume mounting it.
	if err := kube.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: legacyName, Namespace: s.Namespace, Labels: map[string]string{
			certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue, certpilotv1alpha1.LabelChallenges: "true",
		}},
		Type: corev1.SecretTypeOpaque,
	}); err != nil {
		t.Fatal(err)
	}
	legacyVolume := appsv1ac.Deployment(testenv.EdgeDeployment, s.Namespace).WithSpec(appsv1ac.DeploymentSpec().
		WithTemplate(corev1ac.PodTemplateSpec().WithSpec(corev1ac.PodSpec().
			WithVolumes(corev1ac.Volume().WithName("certpilot-acme-challenges").WithSecret(corev1ac.SecretVolumeSource().WithSecretName(legacyName))).
			WithContainers(corev1ac.Container().WithName("edge").WithVolumeMounts(
				corev1ac.VolumeMount().WithName("certpilot-acme-challenges").WithMountPath(certpilotv1alpha1.ChallengeVolumeMountPath).WithReadOnly(true))))))
	if err := kube.Client.Apply(ctx, legacyVolume, client.FieldOwner("certpilot"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}

	cert := s.TLSALPN01Certificate("upgraded", "upgraded.test", "www.upgraded.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	verifySecret(t, s.Pebble, cert)
	if cert.Status.FailedIssuanceAttempts != 0 {
		t.Errorf("failedIssuanceAttempts = %d through the upgrade", cert.Status.FailedIssuanceAttempts)
	}

	deployment := &appsv1.Deployment{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: testenv.EdgeDeployment}, deployment); err != nil {
		t.Fatal(err)
	}
	volumes := deployment.Spec.Template.Spec.Volumes
	if len(volumes) != 1 || volumes[0].Projected == nil || volumes[0].Secret != nil ||
		len(volumes[0].Projected.Sources) != certpilotv1alpha1.ChallengeShards {
		t.Errorf("after the upgrade the Deployment's volumes are %+v, want certpilot's projected shards only", volumes)
	}
	legacy := &corev1.Secret{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: legacyName}, legacy); err != nil {
		t.Fatal(err)
	}
	if len(legacy.Data) != 0 {
		t.Errorf("the single challenge Secret still holds %d responses after issuance", len(legacy.Data))
	}
}

// allowNamespaces sets the edge Deployment's allowed-namespaces annotation, as its owner would.
func allowNamespaces(t *testing.T, s *testenv.Stack, namespaces string) {
	t.Helper()
	deployment := &appsv1.Deployment{}
	key := client.ObjectKey{Namespace: s.Namespace, Name: testenv.EdgeDeployment}
	if err := kube.Client.Get(context.Background(), key, deployment); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(deployment.DeepCopy())
	deployment.Annotations[certpilotv1alpha1.AnnotationAllowedNamespaces] = namespaces
	if err := kube.Client.Patch(context.Background(), deployment, patch); err != nil {
		t.Fatal(err)
	}
}

// namespaceObjects lists the Secrets and Deployments of a namespace with their resourceVersions.
func namespaceObjects(t *testing.T, namespace string) []string {
	t.Helper()
	var objects []string
	var secrets corev1.SecretList
	var deployments appsv1.DeploymentList
	for _, list := range []client.ObjectList{&secrets, &deployments} {
		if err := kube.Client.List(context.Background(), list, client.InNamespace(namespace)); err != nil {
			t.Fatal(err)
		}
	}
	for _, secret := range secrets.Items {
		objects = append(objects, "Secret "+secret.Name+"@"+secret.ResourceVersion)
	}
	for _, deployment := range deployments.Items {
		objects = append(objects, "Deployment "+deployment.Name+"@"+deployment.ResourceVersion)
	}
	slices.Sort(objects)
	return objects
}

func containsAll(s string, parts ...string) bool {
	for _, part := range parts {
		if !strings.Contains(s, part) {
			return false
		}
	}
	return true
}
