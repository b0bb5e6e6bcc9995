package bench

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// kubeFloorNamespace holds the Kubernetes floor's objects; they are deleted before the manager
// starts.
const kubeFloorNamespace = "kube-floor"

// kubeFloor is what the floor also does when it goes through the apiserver: the least any
// Kubernetes controller of Certificates causes. Before its order, a certificate's Certificate is
// created (the user's apply); once issued, its Secret is created and its status patched to
// Ready. No watch, no claim, no challenge Secret, no Event: a lower bound, not a controller.
type kubeFloor struct {
	client client.Client
	cfg    config
}

// newKubeFloor returns a kubeFloor on kube's apiserver, with its namespace created.
func newKubeFloor(ctx context.Context, kube *testenv.Kube, cfg config) (*kubeFloor, error) {
	restConfig := rest.CopyConfig(kube.Config)
	restConfig.QPS = -1 // as the harness: no client-side rate limit
	restConfig.UserAgent = "certpilot-bench-kube-floor"
	c, err := client.New(restConfig, client.Options{Scheme: kube.Scheme})
	if err != nil {
		return nil, err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kubeFloorNamespace}}); err != nil {
		return nil, err
	}
	return &kubeFloor{client: c, cfg: cfg}, nil
}

// begin creates certificate i's Certificate, as the benchmark applies the manager's.
func (k *kubeFloor) begin(ctx context.Context, i int, dnsNames []string) (*certpilotv1alpha1.Certificate, error) {
	name := fmt.Sprintf("k%05d", i)
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: kubeFloorNamespace},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames: dnsNames, SecretName: name + "-tls",
			IssuerRef: certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "kube-floor"},
		},
	}
	if err := k.client.Create(ctx, cert); err != nil {
		return nil, fmt.Errorf("creating Certificate %s: %w", name, err)
	}
	return cert, nil
}

// finish stores the issued chain and key in the Certificate's Secret and patches its status to
// Ready.
func (k *kubeFloor) finish(ctx context.Context, cert *certpilotv1alpha1.Certificate, chain [][]byte, key crypto.Signer) error {
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: cert.Spec.SecretName, Namespace: cert.Namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: pki.EncodeChain(chain), corev1.TLSPrivateKeyKey: keyPEM},
	}
	if err := k.client.Create(ctx, secret); err != nil {
		return fmt.Errorf("creating Secret %s: %w", secret.Name, err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return err
	}
	base := cert.DeepCopy()
	cert.Status.NotBefore, cert.Status.NotAfter = &metav1.Time{Time: leaf.NotBefore}, &metav1.Time{Time: leaf.NotAfter}
	cert.Status.SerialNumber = fmt.Sprintf("%x", leaf.SerialNumber)
	meta.SetStatusCondition(&cert.Status.Conditions, metav1.Condition{
		Type: certpilotv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Issued",
		Message: "issued by the benchmark's Kubernetes floor", ObservedGeneration: cert.Generation,
	})
	if err := k.client.Status().Patch(ctx, cert, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("patching the status of Certificate %s: %w", cert.Name, err)
	}
	return nil
}

// warmUp creates and deletes one Certificate and one Secret (the client discovers the
// Certificate kind, the apiserver serves it once) before anything is timed.
func (k *kubeFloor) warmUp(ctx context.Context) error {
	cert, err := k.begin(ctx, k.cfg.N, []string{"warm-up." + zone})
	if err != nil {
		return err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: cert.Spec.SecretName, Namespace: kubeFloorNamespace}}
	if err := k.client.Create(ctx, secret); err != nil {
		return err
	}
	return k.cleanup(ctx)
}

// cleanup deletes the floor's Certificates and Secrets and waits until they are gone, so that
// the manager, started next, never sees them.
func (k *kubeFloor) cleanup(ctx context.Context) error {
	if err := k.client.DeleteAllOf(ctx, &certpilotv1alpha1.Certificate{}, client.InNamespace(kubeFloorNamespace)); err != nil {
		return err
	}
	if err := k.client.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(kubeFloorNamespace)); err != nil {
		return err
	}
	return testenv.Poll(ctx, time.Minute, func() error {
		var certificates certpilotv1alpha1.CertificateList
		if err := k.client.List(ctx, &certificates, client.InNamespace(kubeFloorNamespace)); err != nil {
			return err
		}
		if n := len(certificates.Items); n > 0 {
			return fmt.Errorf("%d of the Kubernetes floor's Certificates left", n)
		}
		return nil
	})
}

// runKubeFloor runs the Kubernetes floor on kube, with a Pebble of its own, before the manager
// starts, and removes its objects.
func runKubeFloor(ctx context.Context, b *testing.B, kube *testenv.Kube, cfg config, pebbleOptions testenv.PebbleOptions, bind *testenv.BIND) *floorResult {
	progress("Kubernetes floor: %d certificates with the bare client, each also a Certificate, a Secret and a Ready status through the apiserver", cfg.N)
	k, err := newKubeFloor(ctx, kube, cfg)
	if err != nil {
		b.Fatal(err)
	}
	// As warm as the apiserver the manager meets: its start-up work done (the manager's run
	// begins after the stack's start and BENCH_REST), and the client's discovery made.
	if err := k.warmUp(ctx); err != nil {
		b.Fatal(err)
	}
	if err := sleep(ctx, cfg.Rest); err != nil {
		b.Fatal(err)
	}
	pebble := testenv.StartPebble(b, pebbleOptions)
	floor, err := runFloor(ctx, cfg, pebble, bind, names("k", cfg.Names), k)
	pebble.Stop() // before the manager's run: the two never share the CPU
	if err != nil {
		b.Fatal(err)
	}
	if err := k.cleanup(ctx); err != nil {
		b.Fatal(err)
	}
	progress("Kubernetes floor: all %d Ready in %s", cfg.N, seconds(floor.Latency.All))
	return &floor
}
