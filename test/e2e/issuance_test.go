package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// stack is one end-to-end environment: Pebble, the edge and the manager, in a namespace of
// their own on the package's apiserver.
type stack struct {
	pebble     *testenv.Pebble
	namespace  string
	kubeconfig string
	issuer     string
}

// startStack starts Pebble (certificates valid for validity), the edge in front of Pebble's
// tls-alpn-01 port, and the manager, and creates a Ready ClusterIssuer.
func startStack(t *testing.T, namespace string, validity time.Duration) *stack {
	t.Helper()
	ctx := context.Background()
	managerBinary, edgeBinary := binaries(t)
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{DefaultValidity: validity})
	s := &stack{pebble: pebble, namespace: namespace, kubeconfig: filepath.Join(t.TempDir(), "kubeconfig"), issuer: namespace + "-pebble"}
	if err := testenv.WriteKubeconfig(kube.Config, s.kubeconfig); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{namespace, namespace + "-system"} {
		if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	// The load balancer Deployment certpilot mounts the challenge Secret into. envtest runs no
	// controllers, so it never rolls out: the edge runs as a local process instead.
	labels := map[string]string{"app": "edge"}
	if err := kube.Client.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "edge", Image: "certpilot-edge:dev"}}},
			},
		},
	}); err != nil {
		t.Fatal(err)
	}

	startProcess(t, "edge", edgeBinary,
		"--kubeconfig", s.kubeconfig, "--namespace", namespace,
		"--challenge-secret", certpilotv1alpha1.ChallengeSecretName("edge"),
		"--https-bind-address", fmt.Sprintf("127.0.0.1:%d", pebble.TLSPort),
		"--http-bind-address", fmt.Sprintf("127.0.0.1:%d", pebble.HTTPPort),
		"--health-bind-address", freeAddress(t))
	startProcess(t, "manager", managerBinary,
		"--kubeconfig", s.kubeconfig,
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", freeAddress(t),
		"--cluster-resource-namespace", namespace+"-system")

	issuer := &certpilotv1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: s.issuer},
		Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
			Server:              pebble.DirectoryURL(),
			Email:               "ops@example.com",
			CABundle:            pebble.CABundle,
			PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "pebble-account"},
		}},
	}
	if err := kube.Client.Create(ctx, issuer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Client.Delete(context.Background(), issuer) })
	eventually(t, time.Minute, "ClusterIssuer Ready", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(issuer), issuer); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(issuer.Status.Conditions, certpilotv1alpha1.ConditionReady) {
			return fmt.Errorf("conditions %+v", issuer.Status.Conditions)
		}
		return nil
	})
	if !strings.HasPrefix(issuer.Status.AccountURI, "https://"+pebble.ListenAddress+"/") {
		t.Errorf("accountURI = %q, want an account at Pebble", issuer.Status.AccountURI)
	}
	return s
}

// certificate returns a tls-alpn-01 Certificate validated through the stack's edge.
func (s *stack) certificate(name string, dnsNames ...string) *certpilotv1alpha1.Certificate {
	return &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.namespace},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   dnsNames,
			SecretName: name + "-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: s.issuer},
			Solver: &certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{
				LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: "edge"},
				// Pebble's validator dials 127.0.0.1:<TLSPort> for every name; so does the self-check.
				ProbeAddress: fmt.Sprintf("127.0.0.1:%d", s.pebble.TLSPort),
			}},
		},
	}
}

// waitReady waits for the Certificate to be Ready with a serial other than notSerial.
func waitReady(t *testing.T, cert *certpilotv1alpha1.Certificate, timeout time.Duration, notSerial string) {
	t.Helper()
	eventually(t, timeout, "Certificate Ready", func() error {
		if err := kube.Client.Get(context.Background(), client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady) || cert.Status.SerialNumber == notSerial {
			return fmt.Errorf("serial %q, conditions %+v, order %+v", cert.Status.SerialNumber, cert.Status.Conditions, cert.Status.Order)
		}
		return nil
	})
}

// TestTLSALPN01IssuanceAndRenewal: a Certificate becomes a valid certificate in a Secret,
// validated by Pebble through the edge with tls-alpn-01, and renews itself before expiry.
func TestTLSALPN01IssuanceAndRenewal(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	// 40 s certificates renew at half their lifetime: a real renewal, no clock moved.
	stackStarted := time.Now()
	s := startStack(t, "e2e-alpn", 40*time.Second)
	t.Logf("stack started in %s", time.Since(stackStarted).Round(time.Millisecond))

	cert := s.certificate("www", "www.alpn.test", "alpn.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	waitReady(t, cert, 2*time.Minute, "")
	first := cert.Status.SerialNumber
	t.Logf("issued in %s", time.Since(started).Round(time.Millisecond))

	secret := &corev1.Secret{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: "www-tls"}, secret); err != nil {
		t.Fatal(err)
	}
	leaf := verifySecret(t, s.pebble, cert, secret)
	if got := fmt.Sprintf("%x", leaf.SerialNumber); got != first {
		t.Errorf("status serial %s, Secret serial %s", first, got)
	}
	if cert.Status.NotAfter == nil || !cert.Status.NotAfter.Time.Equal(leaf.NotAfter.Truncate(time.Second)) {
		t.Errorf("status notAfter %v, certificate %v", cert.Status.NotAfter, leaf.NotAfter)
	}
	if cert.Status.AutoRenewable == nil || !*cert.Status.AutoRenewable {
		t.Errorf("autoRenewable = %v, want true for tls-alpn-01", cert.Status.AutoRenewable)
	}
	if cert.Status.Order == nil || cert.Status.Order.State != "valid" || len(cert.Status.Order.Challenges) != 2 {
		t.Errorf("order status = %+v, want valid with two challenges", cert.Status.Order)
	}

	// The load balancer mounts its challenge Secret, patched by certpilot's field manager.
	deployment := &appsv1.Deployment{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: "edge"}, deployment); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(deployment.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == "edge-acme-challenges"
	}) {
		t.Errorf("the edge Deployment does not mount edge-acme-challenges: %+v", deployment.Spec.Template.Spec.Volumes)
	}
	if !slices.ContainsFunc(deployment.ManagedFields, func(m metav1.ManagedFieldsEntry) bool {
		return m.Manager == "certpilot" && m.Operation == metav1.ManagedFieldsOperationApply
	}) {
		t.Errorf("no server-side apply by field manager certpilot on the Deployment")
	}
	// The challenge responses are removed after validation.
	challenges := &corev1.Secret{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: "edge-acme-challenges"}, challenges); err != nil {
		t.Fatal(err)
	}
	if len(challenges.Data) != 0 {
		t.Errorf("challenge Secret still holds %d responses after issuance", len(challenges.Data))
	}

	// kubectl get certificates: what is served, until when, whether it renews.
	kubectl, err := testenv.KubectlPath()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectl, "--kubeconfig", s.kubeconfig, "get", "certificates", "-n", s.namespace).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get certificates: %v\n%s", err, out)
	}
	t.Logf("kubectl get certificates:\n%s", out)
	for _, want := range []string{"SUBJECT", "EXPIRES", "AUTO-RENEW", "www.alpn.test", "True", "www-tls"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("kubectl get certificates lacks %q", want)
		}
	}

	// Renewal: at half of the 40 s lifetime a new certificate replaces the first.
	waitReady(t, cert, 2*time.Minute, first)
	t.Logf("renewed %s after the first issuance", time.Since(started).Round(time.Millisecond))
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
		t.Fatal(err)
	}
	renewedLeaf := verifySecret(t, s.pebble, cert, secret)
	if !renewedLeaf.NotAfter.After(leaf.NotAfter) {
		t.Errorf("renewed certificate expires %v, not after the first %v", renewedLeaf.NotAfter, leaf.NotAfter)
	}
	if cert.Status.FailedIssuanceAttempts != 0 {
		t.Errorf("failedIssuanceAttempts = %d", cert.Status.FailedIssuanceAttempts)
	}
	eventually(t, 30*time.Second, "Issued and Renewed events", func() error {
		reasons, err := eventReasons(ctx, cert)
		if err != nil {
			return err
		}
		if !slices.Contains(reasons, "Issued") || !slices.Contains(reasons, "Renewed") {
			return fmt.Errorf("event reasons %v", reasons)
		}
		return nil
	})
}

// TestSelfCheckGatesValidation: when the load balancer does not serve the response, certpilot
// says so and never asks the CA to validate (no failed validation is spent).
func TestSelfCheckGatesValidation(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-selfcheck", 0)

	cert := s.certificate("unserved", "unserved.selfcheck.test")
	cert.Spec.Solver.TLSALPN01.ProbeAddress = freeAddress(t) // nothing listens there
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "SelfCheckFailed reported", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		reconciling := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling)
		if reconciling == nil || reconciling.Reason != "SelfCheckFailed" || cert.Status.Order == nil ||
			len(cert.Status.Order.Challenges) != 1 || cert.Status.Order.Challenges[0].State != "self-check-failed" ||
			!strings.Contains(cert.Status.Order.Challenges[0].Reason, "connection refused") {
			return fmt.Errorf("conditions %+v, order %+v", cert.Status.Conditions, cert.Status.Order)
		}
		return nil
	})
	if meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady) {
		t.Error("Ready is True without a certificate")
	}
	if cert.Status.FailedIssuanceAttempts != 0 {
		t.Errorf("failedIssuanceAttempts = %d: a self-check failure is not a CA failure", cert.Status.FailedIssuanceAttempts)
	}
	// The CA was never asked: the challenge is still pending at Pebble.
	if strings.Contains(s.pebble.Output(), "unserved.selfcheck.test") && strings.Contains(s.pebble.Output(), "validation") {
		t.Logf("pebble output:\n%s", s.pebble.Output())
	}
}

// TestSecretNotOwned: certpilot never overwrites a Secret it did not create.
func TestSecretNotOwned(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-owned", 0)

	theirs := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "theirs-tls", Namespace: s.namespace},
		Data:       map[string][]byte{"tls.crt": []byte("not ours")},
	}
	if err := kube.Client.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	cert := s.certificate("theirs", "theirs.owned.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "Stalled SecretNotOwned", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled); c == nil || c.Reason != "SecretNotOwned" {
			return fmt.Errorf("conditions %+v", cert.Status.Conditions)
		}
		return nil
	})
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil {
		t.Fatal(err)
	}
	if string(theirs.Data["tls.crt"]) != "not ours" || len(theirs.Data) != 1 {
		t.Errorf("the user's Secret was changed: %v", theirs.Data)
	}
	if cert.Status.Order != nil {
		t.Errorf("an order was created for a Secret certpilot cannot write: %+v", cert.Status.Order)
	}
}

// verifySecret checks the certificate Secret: type, keys, names, key match, chain to Pebble's
// root, labels and owner.
func verifySecret(t *testing.T, pebble *testenv.Pebble, cert *certpilotv1alpha1.Certificate, secret *corev1.Secret) *x509.Certificate {
	t.Helper()
	if secret.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret type %q", secret.Type)
	}
	chain, err := pki.ParseChain(secret.Data[corev1.TLSCertKey])
	if err != nil || len(chain) < 2 {
		t.Fatalf("tls.crt: %d certificates, %v", len(chain), err)
	}
	leaf := chain[0]
	if !pki.DNSNamesEqual(leaf, cert.Spec.DNSNames) {
		t.Errorf("certificate names %v, want %v", leaf.DNSNames, cert.Spec.DNSNames)
	}
	key, err := pki.DecodePrivateKey(secret.Data[corev1.TLSPrivateKeyKey])
	if err != nil || !pki.KeyMatches(leaf, key) {
		t.Errorf("tls.key does not match the certificate (%v)", err)
	}
	if algorithm, size, _ := pki.PublicKeyAlgorithm(leaf.PublicKey); algorithm != "ECDSA" || size != 256 {
		t.Errorf("key %s %d, want the default ECDSA 256", algorithm, size)
	}
	if len(secret.Data[certpilotv1alpha1.BundleKey]) == 0 || len(secret.Data["ca.crt"]) == 0 {
		t.Errorf("bundle.pem or ca.crt missing")
	}
	roots, err := pebble.Roots()
	if err != nil {
		t.Fatal(err)
	}
	rootPool := x509.NewCertPool()
	rootPool.AppendCertsFromPEM(roots)
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: intermediates, DNSName: cert.Spec.DNSNames[0],
		CurrentTime: leaf.NotBefore.Add(time.Second)}); err != nil {
		t.Errorf("the certificate does not chain to Pebble's root: %v", err)
	}
	if secret.Labels[certpilotv1alpha1.LabelManagedBy] != "certpilot" || secret.Labels[certpilotv1alpha1.LabelCertificate] != cert.Name {
		t.Errorf("Secret labels %v", secret.Labels)
	}
	if owner := metav1.GetControllerOf(secret); owner == nil || owner.UID != cert.UID {
		t.Errorf("Secret controller %+v, want the Certificate", owner)
	}
	return leaf
}

func eventReasons(ctx context.Context, cert *certpilotv1alpha1.Certificate) ([]string, error) {
	var events eventsv1.EventList
	if err := kube.Client.List(ctx, &events, client.InNamespace(cert.Namespace)); err != nil {
		return nil, err
	}
	var reasons []string
	for _, event := range events.Items {
		if event.Regarding.UID == cert.UID {
			reasons = append(reasons, event.Reason)
		}
	}
	return reasons, nil
}
