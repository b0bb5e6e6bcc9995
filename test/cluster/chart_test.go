package cluster

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testcluster"
	"github.com/certpilot/certpilot/internal/testenv"
)

const (
	release   = "certpilot"
	namespace = "certpilot-system"
	edgeName  = release + "-edge"
)

// TestChartOnTheNode installs the chart with the built image into a namespace that enforces the
// restricted Pod Security Standard, issues a certificate by tls-alpn-01 through the chart's edge
// Deployment with Pebble validating against the edge pod, and uninstalls the release.
func TestChartOnTheNode(t *testing.T) {
	k := adminClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 16*time.Minute)
	defer cancel()

	// The chart's defaults under the restricted Pod Security Standard: the apiserver refuses
	// pods that do not meet it, so the Deployments would never become ready.
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
	}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAndWait(t, k, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}) })

	values := testcluster.ImageValues()
	values["edge"] = map[string]any{"enabled": true, "replicas": 1, "service": map[string]any{"type": "ClusterIP"}}
	installed := time.Now()
	if err := cluster.HelmInstall(ctx, release, namespace, values); err != nil {
		t.Fatal(err)
	}
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_ = cluster.HelmUninstall(ctx, release, namespace)
		}
	})

	// Two manager pods Ready (helm --wait) and one leader.
	var holder string
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var lease coordinationv1.Lease
		if err := k.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "certpilot.dev"}, &lease); err != nil {
			return false, nil
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return false, nil
		}
		holder = *lease.Spec.HolderIdentity
		return true, nil
	}); err != nil {
		t.Fatalf("no leader lease: %v", err)
	}
	pods := readyPods(t, ctx, k, map[string]string{"app.kubernetes.io/component": "controller"})
	if len(pods) != 2 {
		t.Fatalf("%d manager pods Ready, want 2", len(pods))
	}
	leaders := 0
	for _, p := range pods {
		if len(holder) >= len(p.Name) && holder[:len(p.Name)] == p.Name {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("lease holder %q is not exactly one of the manager pods", holder)
	}
	t.Logf("FIGURE helm install to 2 Ready manager pods and a leader (%s): %s", holder, time.Since(installed).Round(100*time.Millisecond))

	// Each part on the installed release, bounded by its own deadline.
	for _, part := range []struct {
		name    string
		timeout time.Duration
		run     func(*testing.T, context.Context, client.Client)
	}{
		{"tls-alpn-01 through the edge pod", 2 * time.Minute, issueThroughEdge},
		{"dns-01 through BIND on the bridge", 2 * time.Minute, issueByDNS01},
		{"a load balancer reading the mounted files", 5 * time.Minute, issueThroughMountedFiles},
		{"injection rolls a Deployment on issuance and renewal", 3 * time.Minute, injectIntoDeployment},
		{"leader failover with certificates in flight", 3 * time.Minute, leaderFailover},
	} {
		t.Run(part.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, part.timeout)
			defer cancel()
			part.run(t, ctx, k)
		})
	}

	// helm uninstall removes what the chart made, and the garbage collector what certpilot
	// made and owned by it (the edge's challenge shards are owned by its Deployment).
	if err := cluster.HelmUninstall(ctx, release, namespace); err != nil {
		t.Fatal(err)
	}
	uninstalled = true
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var deployments appsv1.DeploymentList
		var pods corev1.PodList
		var secrets corev1.SecretList
		if err := k.List(ctx, &deployments, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		if err := k.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		if err := k.List(ctx, &secrets, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		owned := 0
		for _, s := range secrets.Items {
			if len(s.OwnerReferences) > 0 {
				owned++
			}
		}
		return len(deployments.Items) == 0 && len(pods.Items) == 0 && owned == 0, nil
	}); err != nil {
		t.Fatalf("helm uninstall left Deployments, pods or owned Secrets in %s: %v", namespace, err)
	}
}

// issueThroughEdge issues a certificate for a name that Pebble resolves to the edge Service:
// Pebble's validation authority connects to the Service's port 443, which kube-proxy sends to
// the edge pod.
func issueThroughEdge(t *testing.T, ctx context.Context, k client.Client) {
	pebble, issuer := pebbleBehindEdge(t, ctx, k, "pebble-edge")
	web := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	if err := k.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAndWait(t, k, web) })

	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "www", Namespace: "web"},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{"www.cluster.test"},
			SecretName: "www-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: issuer.Name},
		},
	}
	created := time.Now()
	if err := k.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ctx, k, cert)
	t.Logf("FIGURE Certificate Ready through the edge pod: %s", time.Since(created).Round(100*time.Millisecond))

	leaf := storedLeaf(t, ctx, k, "web", "www-tls")
	if err := leaf.VerifyHostname("www.cluster.test"); err != nil {
		t.Fatal(err)
	}
	if attempts := pebble.ValidationAttempts("www.cluster.test"); attempts < 1 {
		t.Fatalf("Pebble validated www.cluster.test %d times, want at least once", attempts)
	}
}

// storedLeaf reads the leaf certificate of the certificate Secret ns/name.
func storedLeaf(t *testing.T, ctx context.Context, k client.Client, ns, name string) *x509.Certificate {
	t.Helper()
	var secret corev1.Secret
	if err := k.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &secret); err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatalf("the certificate Secret %s/%s: %v", ns, name, err)
	}
	return leaf
}

// waitReady waits for the Certificate's Ready condition and fails with its status otherwise.
func waitReady(t *testing.T, ctx context.Context, k client.Client, cert *certpilotv1alpha1.Certificate) {
	t.Helper()
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if err := k.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady), nil
	}); err != nil {
		t.Fatalf("Certificate %s/%s not Ready: %v; conditions: %+v", cert.Namespace, cert.Name, err, cert.Status.Conditions)
	}
}

// readyPods lists the pods of the release namespace with labels whose Ready condition is True.
func readyPods(t *testing.T, ctx context.Context, k client.Client, labels map[string]string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := k.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels(labels)); err != nil {
		t.Fatal(err)
	}
	var ready []corev1.Pod
	for _, p := range list.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
				ready = append(ready, p)
			}
		}
	}
	return ready
}

func adminClient(t *testing.T) client.Client {
	t.Helper()
	k, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// deleteAndWait deletes obj and waits until it is gone, so that the next test starts clean.
func deleteAndWait(t *testing.T, k client.Client, obj client.Object) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := k.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting %s: %v", obj.GetName(), err)
		return
	}
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		err := k.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Errorf("%s %s not gone: %v", fmt.Sprintf("%T", obj), obj.GetName(), err)
	}
}

// pebbleBehindEdge starts a Pebble on the bridge whose every name resolves to the edge Service,
// and a ClusterIssuer of that name for it (solver: tls-alpn-01 through the edge), removed when
// the test ends.
func pebbleBehindEdge(t *testing.T, ctx context.Context, k client.Client, name string) (*testenv.Pebble, *certpilotv1alpha1.ClusterIssuer) {
	t.Helper()
	edgeIP, err := testcluster.ServiceIP(ctx, k, namespace, edgeName)
	if err != nil {
		t.Fatal(err)
	}
	pebble, err := cluster.StartPebble(ctx, edgeIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pebble.Stop)
	issuer := testcluster.PebbleClusterIssuer(name, pebble, namespace, edgeName, net.JoinHostPort(edgeIP, "443"))
	if err := k.Create(ctx, issuer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAndWait(t, k, issuer) })
	return pebble, issuer
}
