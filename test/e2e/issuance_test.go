package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/solver"
	"github.com/certpilot/certpilot/internal/testenv"
)

// startStack starts Pebble (certificates valid for validity; 0 is Pebble's default), the
// built edge in front of Pebble's challenge ports and the built manager, with a Ready
// ClusterIssuer, all stopped when the test ends.
func startStack(t *testing.T, namespace string, validity time.Duration) *testenv.Stack {
	t.Helper()
	// Pebble's default 5 % bad-nonce faults stay on: the client must cope with them.
	return startStackWith(t, namespace, testenv.PebbleOptions{DefaultValidity: validity, NonceRejectPercent: 5})
}

// startStackWith is startStack with Pebble configured by options. The stack's namespace is
// testenv.Namespace(t, namespace): the suite can run twice in one process.
func startStackWith(t *testing.T, namespace string, options testenv.PebbleOptions, managerArgs ...string) *testenv.Stack {
	t.Helper()
	return startStackOptions(t, namespace, options, testenv.StackOptions{ManagerArgs: managerArgs})
}

// startStackOptions is startStackWith with the stack's own options (namespace, binaries and
// directory are filled in).
func startStackOptions(t *testing.T, namespace string, options testenv.PebbleOptions, stackOptions testenv.StackOptions) *testenv.Stack {
	t.Helper()
	return testenv.StartTestStack(t, kube, namespace, options, stackOptions)
}

// waitStalled waits for the Certificate to be Stalled for reason.
func waitStalled(t *testing.T, cert *certpilotv1alpha1.Certificate, reason string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, "Stalled "+reason, func() error {
		if err := kube.Client.Get(context.Background(), client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled); c == nil || c.Reason != reason {
			return fmt.Errorf("conditions %+v", cert.Status.Conditions)
		}
		return nil
	})
}

// waitReady waits for the Certificate to be Ready with a serial other than notSerial.
func waitReady(t *testing.T, cert *certpilotv1alpha1.Certificate, timeout time.Duration, notSerial string) {
	t.Helper()
	testenv.Eventually(t, timeout, "Certificate Ready", func() error {
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

	cert := s.TLSALPN01Certificate("www", "www.alpn.test", "alpn.test")
	writes := watchWrites(t, cert)
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	waitReady(t, cert, 2*time.Minute, "")
	first := cert.Status.SerialNumber
	t.Logf("issued in %s", time.Since(started).Round(time.Millisecond))
	// One write per issuance, the result: the order is recorded in the claim Secret (before
	// any challenge is touched, so a restart resumes it), and the CA's progress is not written.
	if got := writes(cert.ResourceVersion); len(got) > 1 {
		t.Errorf("the Certificate was written %d times during one issuance, want 1: %s", len(got), strings.Join(got, " → "))
	}

	leaf, _ := verifySecret(t, s.Pebble, cert)
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

	// The load balancer mounts its challenge shards as one projected volume, patched by
	// certpilot's field manager.
	deployment := &appsv1.Deployment{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: "edge"}, deployment); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(deployment.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Projected != nil && len(v.Projected.Sources) == certpilotv1alpha1.ChallengeShards &&
			v.Projected.Sources[0].Secret.Name == certpilotv1alpha1.ChallengeShardName("edge", 0)
	}) {
		t.Errorf("the edge Deployment does not mount its challenge shards: %+v", deployment.Spec.Template.Spec.Volumes)
	}
	if !slices.ContainsFunc(deployment.ManagedFields, func(m metav1.ManagedFieldsEntry) bool {
		return m.Manager == "certpilot" && m.Operation == metav1.ManagedFieldsOperationApply
	}) {
		t.Errorf("no server-side apply by field manager certpilot on the Deployment")
	}
	// The challenge responses are removed after validation.
	waitNoChallengeResponses(t, s)

	// kubectl get certificates: what is served, until when, whether it renews.
	kubectl, err := testenv.KubectlPath()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectl, "--kubeconfig", s.Kubeconfig, "get", "certificates", "-n", s.Namespace).CombinedOutput()
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
	renewedLeaf, _ := verifySecret(t, s.Pebble, cert)
	if !renewedLeaf.NotAfter.After(leaf.NotAfter) {
		t.Errorf("renewed certificate expires %v, not after the first %v", renewedLeaf.NotAfter, leaf.NotAfter)
	}
	if cert.Status.FailedIssuanceAttempts != 0 {
		t.Errorf("failedIssuanceAttempts = %d", cert.Status.FailedIssuanceAttempts)
	}
	waitForEvents(t, cert, 30*time.Second, "Issued", "Renewed")
}

// watchWrites watches cert (not created yet) and returns a function that waits until the watch
// has seen resourceVersion and returns what each modification said: its Ready condition's reason.
func watchWrites(t *testing.T, cert *certpilotv1alpha1.Certificate) func(resourceVersion string) []string {
	t.Helper()
	c, err := client.NewWithWatch(kube.Config, client.Options{Scheme: kube.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(context.Background(), &certpilotv1alpha1.CertificateList{},
		client.InNamespace(cert.Namespace), client.MatchingFields{"metadata.name": cert.Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	var writes []string
	return func(resourceVersion string) []string {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case event := <-w.ResultChan():
				seen, ok := event.Object.(*certpilotv1alpha1.Certificate)
				if !ok {
					t.Fatalf("watch: %v", event.Object)
				}
				if event.Type == watch.Modified {
					reason := "?"
					if ready := meta.FindStatusCondition(seen.Status.Conditions, certpilotv1alpha1.ConditionReady); ready != nil {
						reason = ready.Reason
					}
					writes = append(writes, reason)
				}
				if seen.ResourceVersion == resourceVersion {
					return writes
				}
			case <-timeout:
				t.Fatalf("the watch did not reach resourceVersion %s; seen: %v", resourceVersion, writes)
			}
		}
	}
}

// TestSelfCheckGatesValidation: when the load balancer does not serve the response, certpilot
// says so and never asks the CA to validate (no failed validation is spent).
func TestSelfCheckGatesValidation(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-selfcheck", 0)

	cert := s.TLSALPN01Certificate("unserved", "unserved.selfcheck.test")
	cert.Spec.Solver.TLSALPN01.ProbeAddress = testenv.FreeAddress(t) // nothing listens there
	if err := s.AllowProbeAddress(ctx, cert.Spec.Solver.TLSALPN01.ProbeAddress); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "SelfCheckFailed reported", func() error {
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
	// The CA was never asked to validate: no failed validation was spent on the rate limit.
	if n := s.Pebble.ValidationAttempts("unserved.selfcheck.test"); n != 0 {
		t.Errorf("Pebble attempted %d validations of a challenge that is not served", n)
	}
	if n := s.Pebble.OrderCount(); n != 1 {
		t.Errorf("Pebble saw %d orders, want 1", n)
	}
	if cert.Status.FailedIssuanceAttempts != 0 {
		t.Errorf("failedIssuanceAttempts = %d: a self-check failure is not a CA failure", cert.Status.FailedIssuanceAttempts)
	}

	// Deleted mid-order, the Certificate is gone at once (the load balancer's shards need no
	// finalizer), and the name it held is free: another Certificate for it is issued.
	if responses, err := s.ChallengeResponses(ctx); err != nil || len(responses) != 1 {
		t.Fatalf("challenge shards: %d responses, %v; want the one of the open order", len(responses), err)
	}
	if err := kube.Client.Delete(ctx, cert); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "Certificate deleted", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err == nil {
			return fmt.Errorf("the Certificate still exists, finalizers %v", cert.Finalizers)
		}
		return nil
	})
	next := s.TLSALPN01Certificate("served", "unserved.selfcheck.test")
	if err := kube.Client.Create(ctx, next); err != nil {
		t.Fatal(err)
	}
	waitReady(t, next, 2*time.Minute, "")
}

// TestSecretNotOwned: certpilot never overwrites a Secret it did not create.
func TestSecretNotOwned(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-owned", 0)

	theirs := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "theirs-tls", Namespace: s.Namespace},
		Data:       map[string][]byte{"tls.crt": []byte("not ours")},
	}
	if err := kube.Client.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	cert := s.TLSALPN01Certificate("theirs", "theirs.owned.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitStalled(t, cert, "SecretNotOwned")
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil {
		t.Fatal(err)
	}
	if string(theirs.Data["tls.crt"]) != "not ours" || len(theirs.Data) != 1 {
		t.Errorf("the user's Secret was changed: %v", theirs.Data)
	}
	if cert.Status.Order != nil {
		t.Errorf("an order was created for a Secret certpilot cannot write: %+v", cert.Status.Order)
	}
	waitForEvents(t, cert, 10*time.Second, "SecretNotOwned")

	// A Certificate without a solver (the issuer sets none either) stalls before any order is
	// opened at the CA.
	unsupported := s.TLSALPN01Certificate("nosolver", "nosolver.owned.test")
	unsupported.Spec.Solver = nil
	if err := kube.Client.Create(ctx, unsupported); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "Stalled NoSolver", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(unsupported), unsupported); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(unsupported.Status.Conditions, certpilotv1alpha1.ConditionStalled); c == nil || c.Reason != "NoSolver" {
			return fmt.Errorf("conditions %+v", unsupported.Status.Conditions)
		}
		return nil
	})
	if n := s.Pebble.OrderCount(); n != 0 {
		t.Errorf("Pebble saw %d orders, want none", n)
	}
}

// TestSecretAppearsDuringIssuance: someone creates a Secret of the Certificate's secretName after
// the Certificate was seen without one, while its issuance is under way (the CA hangs, so the
// issuance waits on its order request). Storing the certificate does not read the API first: its
// create is refused, the Secret is read, and the Certificate is Stalled with SecretNotOwned; the
// user's Secret is left as it was.
func TestSecretAppearsDuringIssuance(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-appears", 0)
	cert := s.TLSALPN01Certificate("appears", "appears.owned.test")
	logsBefore := len(s.Manager.Output())
	if err := s.Pebble.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = s.Pebble.Resume()
		}
	}()
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "the issuance started", func() error {
		if !strings.Contains(s.Manager.Output()[logsBefore:], `"msg":"Issuing certificate"`) {
			return fmt.Errorf("the manager has not started the issuance yet")
		}
		return nil
	})
	theirs := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: cert.Spec.SecretName, Namespace: s.Namespace},
		Data:       map[string][]byte{"tls.crt": []byte("not ours")},
	}
	createErr := kube.Client.Create(ctx, theirs)
	resumed = true
	if err := s.Pebble.Resume(); err != nil {
		t.Fatal(err)
	}
	if createErr != nil {
		t.Fatalf("creating the user's Secret: %v", createErr)
	}
	version := theirs.ResourceVersion
	waitStalled(t, cert, "SecretNotOwned")
	if !strings.Contains(s.Manager.Output()[logsBefore:], `"msg":"Created ACME order"`) {
		t.Error("the Certificate stalled before its order: the Secret was seen before the store, not by its refused create")
	}
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil {
		t.Fatal(err)
	}
	if theirs.ResourceVersion != version || string(theirs.Data["tls.crt"]) != "not ours" || len(theirs.Data) != 1 {
		t.Errorf("the user's Secret was changed (resourceVersion %s, was %s): %v", theirs.ResourceVersion, version, theirs.Data)
	}
}

// TestRSAKey: a Certificate asking for an RSA key is issued with one of that size. The key is
// made in the background (it takes longer than a worker waits), and the Certificate is woken
// when it is ready.
func TestRSAKey(t *testing.T) {
	testenv.SkipIfShort(t)
	s := startStack(t, "e2e-rsa", 0)
	cert := s.TLSALPN01Certificate("rsa", "rsa.alpn.test")
	cert.Spec.PrivateKey = &certpilotv1alpha1.PrivateKey{Algorithm: certpilotv1alpha1.KeyAlgorithmRSA, Size: 3072}
	if err := kube.Client.Create(context.Background(), cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	secret := &corev1.Secret{}
	if err := kube.Client.Get(context.Background(), client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, secret); err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.DecodePrivateKey(secret.Data[corev1.TLSPrivateKeyKey])
	if err != nil || !pki.KeyMatches(leaf, key) {
		t.Fatalf("tls.key does not match the certificate (%v)", err)
	}
	if algorithm, size, _ := pki.PublicKeyAlgorithm(leaf.PublicKey); algorithm != "RSA" || size != 3072 {
		t.Errorf("key %s %d, want RSA 3072", algorithm, size)
	}
}

// verifySecret reads the Certificate's Secret and checks it: type, keys, names, key match,
// chain to Pebble's root, labels and owner.
func verifySecret(t *testing.T, pebble *testenv.Pebble, cert *certpilotv1alpha1.Certificate) (*x509.Certificate, *corev1.Secret) {
	t.Helper()
	secret := &corev1.Secret{}
	if err := kube.Client.Get(context.Background(), client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, secret); err != nil {
		t.Fatal(err)
	}
	if secret.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret type %q", secret.Type)
	}
	chain, err := pki.ParseChain(secret.Data[corev1.TLSCertKey])
	if err != nil || len(chain) < 2 {
		t.Fatalf("tls.crt: %d certificates, %v", len(chain), err)
	}
	leaf := chain[0]
	if !pki.NamesEqual(leaf, cert.Spec.Identifiers()) {
		t.Errorf("certificate names %v %v, want %v", leaf.DNSNames, leaf.IPAddresses, cert.Spec.Identifiers())
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
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: intermediates, DNSName: cert.Spec.Identifiers()[0],
		CurrentTime: leaf.NotBefore.Add(time.Second)}); err != nil {
		t.Errorf("the certificate does not chain to Pebble's root: %v", err)
	}
	if secret.Labels[certpilotv1alpha1.LabelManagedBy] != "certpilot" || secret.Labels[certpilotv1alpha1.LabelCertificate] != cert.Name {
		t.Errorf("Secret labels %v", secret.Labels)
	}
	if owner := metav1.GetControllerOf(secret); owner == nil || owner.UID != cert.UID {
		t.Errorf("Secret controller %+v, want the Certificate", owner)
	}
	return leaf, secret
}

// waitForEvents waits until the Certificate has Events with each of reasons.
func waitForEvents(t *testing.T, cert *certpilotv1alpha1.Certificate, timeout time.Duration, reasons ...string) {
	t.Helper()
	testenv.Eventually(t, timeout, fmt.Sprintf("events %v", reasons), func() error {
		got, err := eventReasons(context.Background(), cert)
		if err != nil {
			return err
		}
		for _, reason := range reasons {
			if !slices.Contains(got, reason) {
				return fmt.Errorf("event reasons %v, want %v", got, reasons)
			}
		}
		return nil
	})
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

// waitNoChallengeResponses waits until the edge's challenge shards hold no response: removals
// ride along with the shards' next writes or are flushed on their own within
// solver.RemovalDelay.
func waitNoChallengeResponses(t *testing.T, s *testenv.Stack) {
	t.Helper()
	testenv.Eventually(t, 4*solver.RemovalDelay, "challenge responses removed", func() error {
		responses, err := s.ChallengeResponses(context.Background())
		if err != nil {
			return err
		}
		if len(responses) != 0 {
			return fmt.Errorf("the challenge shards still hold %d responses", len(responses))
		}
		return nil
	})
}
