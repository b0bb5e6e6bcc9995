package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testcluster"
)

// injectIntoDeployment injects a certificate into a running Deployment as a mounted file with
// rollout Always: on issuance and on renewal its pods roll, and the new pod's file (read on the
// node, where the kubelet wrote the pod's volume) holds the new certificate.
func injectIntoDeployment(t *testing.T, ctx context.Context, k client.Client) {
	const ns, app = "inject", "app"
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAndWait(t, k, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}) })
	labels := map[string]string{"app": app}
	deployment := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken:  ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To(int64(1)),
					Containers: []corev1.Container{{
						Name: "app", Image: testcluster.PauseImage, ImagePullPolicy: corev1.PullNever,
					}},
				},
			},
		},
	}
	if err := k.Create(ctx, deployment); err != nil {
		t.Fatal(err)
	}
	first := waitPodReady(t, ctx, k, ns, labels)

	_, issuer := pebbleBehindEdge(t, ctx, k, "pebble-inject")

	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{"app.cluster.test"},
			SecretName: "app-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: issuer.Name},
			Inject: []certpilotv1alpha1.InjectTarget{{
				Kind: "Deployment", Name: app, MountPath: "/etc/tls", Rollout: certpilotv1alpha1.RolloutAlways,
			}},
		},
	}
	if err := k.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ctx, k, cert)
	issued := time.Now()
	serial := secretSerial(t, ctx, k, ns, "app-tls")
	// The kubelet also refreshes the Secret in a running pod's volume on its own: only a pod
	// the rollout started counts.
	pod := waitPodWithSerial(t, ctx, k, ns, labels, serial, first.UID)
	t.Logf("FIGURE injection: a new pod Ready with the certificate %s after the Certificate was Ready", time.Since(issued).Round(100*time.Millisecond))

	// Renewal: a new certificate, a new rollout, a new pod reading it.
	if err := k.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(cert.DeepCopy())
	metav1.SetMetaDataAnnotation(&cert.ObjectMeta, certpilotv1alpha1.AnnotationRenew, time.Now().Format(time.RFC3339Nano))
	renewed := time.Now()
	if err := k.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	var newSerial string
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		newSerial = secretSerial(t, ctx, k, ns, "app-tls")
		return newSerial != serial, nil
	}); err != nil {
		t.Fatalf("the certificate was not renewed: %v", err)
	}
	stored := time.Now()
	waitPodWithSerial(t, ctx, k, ns, labels, newSerial, first.UID, pod.UID)
	t.Logf("FIGURE injection on renewal: renewed %s after the request, a new pod Ready with it %s later",
		stored.Sub(renewed).Round(100*time.Millisecond), time.Since(stored).Round(100*time.Millisecond))
}

// secretSerial is the serial (hex) of the leaf in a certificate Secret, "" while it has none.
func secretSerial(t *testing.T, ctx context.Context, k client.Client, ns, name string) string {
	var secret corev1.Secret
	if err := k.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &secret); err != nil {
		return ""
	}
	return pemSerial(secret.Data[corev1.TLSCertKey])
}

func pemSerial(data []byte) string {
	leaf, err := pki.ParseLeaf(data)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%x", leaf.SerialNumber)
}

// waitPodWithSerial waits for a Ready pod, other than the pods before, whose mounted tls.crt, as
// the kubelet wrote it on the node, holds the certificate with serial, and returns it.
func waitPodWithSerial(t *testing.T, ctx context.Context, k client.Client, ns string, labels map[string]string, serial string, before ...types.UID) corev1.Pod {
	t.Helper()
	var found corev1.Pod
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var list corev1.PodList
		if err := k.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
			return false, err
		}
		for _, p := range list.Items {
			ready := false
			for _, c := range p.Status.Conditions {
				ready = ready || c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
			}
			if !ready || p.DeletionTimestamp != nil || slices.Contains(before, p.UID) {
				continue
			}
			volumes, _ := filepath.Glob(filepath.Join(cluster.Dir, "kubelet", "pods", string(p.UID), "volumes", "kubernetes.io~secret", "certpilot-*"))
			for _, v := range volumes {
				data, err := os.ReadFile(filepath.Join(v, "tls.crt"))
				if err == nil && strings.EqualFold(pemSerial(data), serial) {
					found = p
					return true, nil
				}
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("no Ready pod the rollout started reads the certificate %s from its mounted file (the Deployment did not roll?): %v", serial, err)
	}
	return found
}
