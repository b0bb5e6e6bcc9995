package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/acme/acmetest"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/solver"
	"github.com/certpilot/certpilot/internal/testenv"
)

// certificateHarness runs the certificate reconciler as the manager does (reads through an
// informer cache that holds only certpilot's Secrets, writes to the apiserver), one Reconcile
// at a time, against envtest and an in-process ACME CA (acmetest) whose DNS server answers
// every pending dns-01 challenge: Certificates use the manual dns01 solver, whose self-check
// then passes with nothing published. Hooks on the reconciler's client run just before one of
// its Secret writes: the moment between its read and its write, in which another writer
// changes the Secret.
type certificateHarness struct {
	namespace string
	ca        *acmetest.CA
	issuer    *certpilotv1alpha1.Issuer
	accounts  *Accounts
	// cached is the reconciler's client without hooks.
	cached     client.Client
	client     *hookedClient
	reconciler *CertificateReconciler
}

// newCertificateHarness starts the CA, a namespace with a Ready Issuer, and the reconciler.
func newCertificateHarness(t *testing.T, namespacePrefix string) *certificateHarness {
	t.Helper()
	return newCertificateHarnessWithProfile(t, namespacePrefix, "")
}

// newCertificateHarnessWithProfile is newCertificateHarness with a CA that offers the ACME
// profile and an Issuer that asks for it (none: the CA's default, classic).
func newCertificateHarnessWithProfile(t *testing.T, namespacePrefix, profile string) *certificateHarness {
	t.Helper()
	testenv.SkipIfShort(t)
	options := acmetest.Options{Now: time.Now}
	if profile != "" {
		options.Profiles = map[string]time.Duration{profile: 45 * 24 * time.Hour}
	}
	ca, err := acmetest.Start(options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Close)
	h := &certificateHarness{namespace: createNamespace(t, namespacePrefix), ca: ca}
	h.issuer = &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "acmetest"},
		Spec: certpilotv1alpha1.IssuerSpec{
			ACME: certpilotv1alpha1.ACMEIssuer{
				Server: ca.DirectoryURL(), Email: "ops@example.com", CABundle: ca.CABundle(),
				PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "acmetest-account"},
				Profile:             profile,
			},
			Solver: &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{
				Manual: &certpilotv1alpha1.ManualDNS01{}, Nameservers: []string{ca.DNSAddr()},
			}},
		},
	}
	create(t, h.issuer)
	h.accounts = &Accounts{Reader: testKube.Client, UserAgent: "certpilot-test"}
	issuers := &IssuerReconciler{Client: testKube.Client, Accounts: h.accounts}
	eventually(t, "the Issuer is Ready", func() error {
		if _, err := issuers.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(h.issuer)}); err != nil {
			return err
		}
		if err := testKube.Client.Get(context.Background(), client.ObjectKeyFromObject(h.issuer), h.issuer); err != nil {
			return err
		}
		return reconciledCondition(h.issuer, certpilotv1alpha1.ConditionReady, metav1.ConditionTrue, "AccountRegistered")()
	})

	h.cached = testenv.CachedClient(t, testKube, false, h.namespace)
	h.client = &hookedClient{Client: h.cached, hooks: map[writeKey]writeHook{}, writes: map[writeKey]int{}}
	h.reconciler = &CertificateReconciler{
		Client: h.client, APIReader: testKube.Client, SecretNames: testenv.SecretNames(t, testKube, h.namespace),
		Accounts: h.accounts, Recorder: discardRecorder{},
		Solvers: &solver.Deps{Client: h.client, APIReader: testKube.Client, Recorder: discardRecorder{}, CheckTimeout: 10 * time.Second},
	}
	return h
}

// newCertificate creates a Certificate for one name, issued by the harness's Issuer into the
// Secret "<name>-tls".
func (h *certificateHarness) newCertificate(t *testing.T, name string) *certpilotv1alpha1.Certificate {
	t.Helper()
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: name},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{name + ".harness.example"},
			SecretName: name + "-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Name: h.issuer.Name},
		},
	}
	create(t, cert)
	return cert
}

// reconcileUntil reconciles cert, one Reconcile per poll, until done (given that reconcile's
// error, with cert as the API holds it afterwards) returns nil; it returns that reconcile's
// error. A reconcile that the cache is not ready for yet does nothing and is simply repeated.
// A failed issuance ends the test at once: none of these tests has one, and its backoff would
// only make the wait time out later.
func (h *certificateHarness) reconcileUntil(t *testing.T, cert *certpilotv1alpha1.Certificate, what string, done func(err error) error) error {
	t.Helper()
	var last error
	eventually(t, what, func() error {
		_, last = h.reconciler.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(cert)})
		if err := testKube.Client.Get(context.Background(), client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if cert.Status.FailedIssuanceAttempts > 0 {
			t.Fatalf("%s: the issuance failed (last reconcile: %v): %s", what, last, describeConditions(cert))
		}
		if err := done(last); err != nil {
			return fmt.Errorf("%w (last reconcile: %v; conditions: %s)", err, last, describeConditions(cert))
		}
		return nil
	})
	return last
}

// issue reconciles cert until it is Ready with a stored certificate, and until the
// reconciler's cache holds that Secret as the API does; it returns the Secret.
func (h *certificateHarness) issue(t *testing.T, cert *certpilotv1alpha1.Certificate) *corev1.Secret {
	t.Helper()
	h.reconcileUntil(t, cert, "the certificate is issued", func(error) error { return readyCondition(cert) })
	secret := getSecret(t, cert.Namespace, cert.Spec.SecretName)
	eventually(t, "the reconciler's cache holds the certificate Secret", func() error {
		cached := &corev1.Secret{}
		if err := h.cached.Get(context.Background(), client.ObjectKeyFromObject(secret), cached); err != nil {
			return err
		}
		if cached.ResourceVersion != secret.ResourceVersion {
			return fmt.Errorf("cached resourceVersion %s, the API's %s", cached.ResourceVersion, secret.ResourceVersion)
		}
		return nil
	})
	return secret
}

// readyCondition checks that cert is Ready and its status records the stored certificate.
func readyCondition(cert *certpilotv1alpha1.Certificate) error {
	if !meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady) || cert.Status.SerialNumber == "" ||
		cert.Status.Order == nil || cert.Status.Order.State != acme.StatusValid {
		return errors.New("not Ready with a stored certificate")
	}
	return nil
}

// stalledCondition checks that cert is Stalled with reason.
func stalledCondition(cert *certpilotv1alpha1.Certificate, reason string) error {
	c := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != reason {
		return fmt.Errorf("not Stalled with reason %s", reason)
	}
	return nil
}

func describeConditions(cert *certpilotv1alpha1.Certificate) string {
	s := fmt.Sprintf("revision %d serial %q", cert.Status.Revision, cert.Status.SerialNumber)
	for _, c := range cert.Status.Conditions {
		s += fmt.Sprintf("; %s=%s (%s): %s", c.Type, c.Status, c.Reason, c.Message)
	}
	return s
}

// requestRenewal sets the renew annotation to value, as `kubectl certpilot renew` does.
func requestRenewal(t *testing.T, cert *certpilotv1alpha1.Certificate, value string) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, certpilotv1alpha1.AnnotationRenew, value)
	if err := testKube.Client.Patch(context.Background(), cert, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		t.Fatalf("Requesting a renewal of %s: %v", cert.Name, err)
	}
}

// servedLeaf parses the Secret's certificate and checks that its tls.key is the certificate's
// key.
func servedLeaf(t *testing.T, secret *corev1.Secret) string {
	t.Helper()
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatalf("Secret %s holds no certificate: %v", secret.Name, err)
	}
	key, err := pki.DecodePrivateKey(secret.Data[corev1.TLSPrivateKeyKey])
	if err != nil || !pki.KeyMatches(leaf, key) {
		t.Fatalf("Secret %s: tls.key is not the key of tls.crt (%v)", secret.Name, err)
	}
	return fmt.Sprintf("%x", leaf.SerialNumber)
}

// writeHook runs before a write of a Secret; obj is what is written (a *corev1.Secret, or a
// *corev1ac.SecretApplyConfiguration for an apply).
type writeHook func(ctx context.Context, obj any)

type writeKey struct{ verb, name string }

// hookedClient counts the Secret writes of the client it wraps, by verb (create, patch,
// update, apply, delete) and name, and runs a hook once before the next such write; writes of
// a Certificate itself (not its status) are counted under certificateWriteKey(name). It can
// also hold a Secret's cached reads at one version, as a cache whose watch lags behind would.
type hookedClient struct {
	client.Client
	mu     sync.Mutex
	hooks  map[writeKey]writeHook
	writes map[writeKey]int
	// held are the Secrets whose reads return the copy held here, by name.
	held map[string]*corev1.Secret
}

// holdCached makes the reads of Secret key return it as the cache holds it now, until
// releaseCached: the cache does not see the writes that follow.
func (c *hookedClient) holdCached(ctx context.Context, key client.ObjectKey) error {
	secret := &corev1.Secret{}
	if err := c.Client.Get(ctx, key, secret); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == nil {
		c.held = map[string]*corev1.Secret{}
	}
	c.held[key.Name] = secret
	return nil
}

// releaseCached lets the reads of Secret name see the cache again.
func (c *hookedClient) releaseCached(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.held, name)
}

func (c *hookedClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if secret, ok := obj.(*corev1.Secret); ok {
		c.mu.Lock()
		held := c.held[key.Name]
		c.mu.Unlock()
		if held != nil && held.Namespace == key.Namespace {
			held.DeepCopyInto(secret)
			return nil
		}
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// before arms hook for the next write of Secret name with verb.
func (c *hookedClient) before(verb, name string, hook writeHook) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hooks[writeKey{verb, name}] = hook
}

// hookRan reports nil once the hook armed for verb and name has run.
func (c *hookedClient) hookRan(verb, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, armed := c.hooks[writeKey{verb, name}]; armed {
		return fmt.Errorf("no %s of Secret %s yet", verb, name)
	}
	return nil
}

// count is how many writes of Secret name with verb were sent (refused ones too).
func (c *hookedClient) count(verb, name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes[writeKey{verb, name}]
}

func (c *hookedClient) write(ctx context.Context, verb string, obj any) {
	var name string
	switch o := obj.(type) {
	case *corev1.Secret:
		name = o.Name
	case *corev1ac.SecretApplyConfiguration:
		name = *o.GetName()
	case *certpilotv1alpha1.Certificate:
		name = certificateWriteKey(o.Name)
	default:
		return
	}
	key := writeKey{verb, name}
	c.mu.Lock()
	c.writes[key]++
	hook := c.hooks[key]
	delete(c.hooks, key)
	c.mu.Unlock()
	if hook != nil {
		hook(ctx, obj)
	}
}

// certificateWriteKey is the name under which hookedClient counts the writes of Certificate name.
func certificateWriteKey(name string) string { return "Certificate " + name }

func (c *hookedClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.write(ctx, "create", obj)
	return c.Client.Create(ctx, obj, opts...)
}

func (c *hookedClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.write(ctx, "update", obj)
	return c.Client.Update(ctx, obj, opts...)
}

func (c *hookedClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	c.write(ctx, "patch", obj)
	return c.Client.Patch(ctx, obj, patch, opts...)
}

func (c *hookedClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	c.write(ctx, "apply", obj)
	return c.Client.Apply(ctx, obj, opts...)
}

func (c *hookedClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	c.write(ctx, "delete", obj)
	return c.Client.Delete(ctx, obj, opts...)
}
