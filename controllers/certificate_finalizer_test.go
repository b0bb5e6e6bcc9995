package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/solver"
	"github.com/certpilot/certpilot/internal/testenv"
)

// rfc2136Harness is a certificateHarness whose Certificates answer dns-01 through TSIG-signed
// updates on a real BIND (the CA's DNS answers every challenge, so BIND only has to hold the
// records certpilot writes and removes).
type rfc2136Harness struct {
	*certificateHarness
	bind *testenv.BIND
}

func newRFC2136Harness(t *testing.T, namespacePrefix string) *rfc2136Harness {
	t.Helper()
	h := &rfc2136Harness{certificateHarness: newCertificateHarness(t, namespacePrefix), bind: testenv.StartBIND(t, "finalizer.test")}
	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "tsig"},
		Data:       map[string][]byte{"secret": []byte(h.bind.TSIGSecret)},
	})
	return h
}

// rfc2136Solver is the solver spec that updates BIND; nameservers, when given, are where the
// self-check looks for the records.
func (h *rfc2136Harness) rfc2136Solver(nameservers ...string) *certpilotv1alpha1.Solver {
	return &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{
		Nameservers: nameservers,
		RFC2136: &certpilotv1alpha1.RFC2136DNS01{
			Nameserver: h.bind.Address, TSIGKeyName: h.bind.TSIGKeyName, TSIGAlgorithm: h.bind.TSIGAlgorithm,
			TSIGSecretRef: certpilotv1alpha1.SecretKeySelector{Name: "tsig", Key: "secret"},
		},
	}}
}

// newCertificate creates a Certificate for name.finalizer.test with the solver.
func (h *rfc2136Harness) newCertificate(t *testing.T, name string, s *certpilotv1alpha1.Solver) *certpilotv1alpha1.Certificate {
	t.Helper()
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: name},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{name + ".finalizer.test"},
			SecretName: name + "-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Name: h.issuer.Name},
			Solver:     s,
		},
	}
	create(t, cert)
	return cert
}

// txt returns the TXT values BIND holds for the certificate's challenge record.
func (h *rfc2136Harness) txt(t *testing.T, cert *certpilotv1alpha1.Certificate) []string {
	t.Helper()
	values, err := h.bind.TXT("_acme-challenge." + cert.Spec.DNSNames[0] + ".")
	if err != nil {
		t.Fatalf("Reading TXT records: %v", err)
	}
	return values
}

// TestChallengeFinalizerKept: the rfc2136 solver's finalizer is added once, before the first TXT
// record, and kept: a renewal writes no finalizer, the records are gone after each issuance, and
// the finalizer goes when no solver needs it any more.
func TestChallengeFinalizerKept(t *testing.T) {
	h := newRFC2136Harness(t, "finalizer-kept-")
	cert := h.newCertificate(t, "kept", h.rfc2136Solver())
	writes := certificateWriteKey(cert.Name)

	secret := h.issue(t, cert)
	if !controllerutil.ContainsFinalizer(cert, challengeFinalizer) {
		t.Errorf("finalizers %v after the first issuance, want %s kept", cert.Finalizers, challengeFinalizer)
	}
	if n := h.client.count("patch", writes); n != 1 {
		t.Errorf("%d patches of the Certificate in the first issuance, want 1 (the finalizer's add)", n)
	}
	if values := h.txt(t, cert); len(values) != 0 {
		t.Errorf("TXT records left after the first issuance: %v", values)
	}
	if cleanupPending(&cert.Status) {
		t.Errorf("status records a pending cleanup after a clean issuance: %+v", cert.Status.Order)
	}

	firstSerial := servedLeaf(t, secret)
	requestRenewal(t, cert, "renew-1")
	h.reconcileUntil(t, cert, "the certificate is renewed", func(error) error {
		secret := &corev1.Secret{}
		if err := testKube.Client.Get(context.Background(), client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, secret); err != nil {
			return err
		}
		if servedLeaf(t, secret) == firstSerial || cert.Status.SerialNumber == firstSerial {
			return errors.New("not renewed yet")
		}
		return readyCondition(cert)
	})
	if n := h.client.count("patch", writes); n != 1 {
		t.Errorf("%d patches of the Certificate after a renewal, want still 1: the finalizer is kept", n)
	}
	if !controllerutil.ContainsFinalizer(cert, challengeFinalizer) {
		t.Errorf("finalizers %v after the renewal, want %s", cert.Finalizers, challengeFinalizer)
	}
	if values := h.txt(t, cert); len(values) != 0 {
		t.Errorf("TXT records left after the renewal: %v", values)
	}

	// The names move to the issuer's solver (dns01 manual, which publishes nothing): the
	// finalizer goes, and nothing is issued for it.
	cert.Spec.Solver = nil
	if err := testKube.Client.Update(context.Background(), cert); err != nil {
		t.Fatal(err)
	}
	serial := cert.Status.SerialNumber
	h.reconcileUntil(t, cert, "the finalizer is removed", func(error) error {
		if controllerutil.ContainsFinalizer(cert, challengeFinalizer) {
			return fmt.Errorf("finalizers %v", cert.Finalizers)
		}
		return nil
	})
	if cert.Status.SerialNumber != serial {
		t.Errorf("serial %s after the solver change, want %s: no new certificate", cert.Status.SerialNumber, serial)
	}
}

// TestChallengeFinalizerDeletedMidOrder: a Certificate deleted while its TXT record is published
// (the self-check cannot see it: its nameserver does not answer) is held until the record is
// removed from BIND, then goes.
func TestChallengeFinalizerDeletedMidOrder(t *testing.T) {
	h := newRFC2136Harness(t, "finalizer-deleted-")
	cert := h.newCertificate(t, "midorder", h.rfc2136Solver(testenv.FreeAddress(t)))
	h.reconcileUntil(t, cert, "the record is published and not visible", func(error) error {
		reconciling := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling)
		if reconciling == nil || reconciling.Reason != "DNSRecordNotVisible" {
			return errors.New("not waiting for the record")
		}
		if len(h.txt(t, cert)) == 0 {
			return errors.New("no TXT record at BIND")
		}
		return nil
	})
	if !controllerutil.ContainsFinalizer(cert, challengeFinalizer) {
		t.Fatalf("finalizers %v with a record published, want %s", cert.Finalizers, challengeFinalizer)
	}

	if err := testKube.Client.Delete(context.Background(), cert); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Certificate is gone", func() error {
		if _, err := h.reconciler.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(cert)}); err != nil {
			return err
		}
		err := testKube.Client.Get(context.Background(), client.ObjectKeyFromObject(cert), cert)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v), finalizers %v", err, cert.Finalizers)
	})
	if values := h.txt(t, cert); len(values) != 0 {
		t.Errorf("TXT records left by the deleted Certificate: %v", values)
	}
}

// TestRemoveChallengesMarksFailure: a cleanup that fails leaves its mark on the status's
// challenges (one per name when none were recorded), which a cleanup that succeeds clears.
func TestRemoveChallengesMarksFailure(t *testing.T) {
	spec := &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{Manual: &certpilotv1alpha1.ManualDNS01{}}}
	cert := &certpilotv1alpha1.Certificate{Spec: certpilotv1alpha1.CertificateSpec{DNSNames: []string{"a.test", "b.test"}, Solver: spec}}
	cert.Status.Order = &certpilotv1alpha1.OrderStatus{URL: "https://ca/order/1", State: "valid", DNSNames: cert.Spec.DNSNames}
	failing := &cleanupSolver{err: errors.New("DNS server unreachable")}
	run := &certificateRun{cert: cert, solvers: map[*certpilotv1alpha1.Solver]solver.Solver{spec: failing}}
	cs := &challengeSteps{}

	if err := cs.removeChallenges(context.Background(), run); err == nil {
		t.Fatal("removeChallenges succeeded with a failing cleanup")
	}
	if !cleanupPending(&cert.Status) {
		t.Fatalf("no pending cleanup recorded: %+v", cert.Status.Order.Challenges)
	}
	if got := len(cert.Status.Order.Challenges); got != 2 {
		t.Errorf("%d challenges recorded, want one per name", got)
	}
	for _, c := range cert.Status.Order.Challenges {
		if c.State != "valid" || c.Type != "dns-01" || !strings.Contains(c.Reason, "DNS server unreachable") {
			t.Errorf("challenge %+v, want a valid dns-01 with the cleanup's error", c)
		}
	}

	failing.err = nil
	if err := cs.removeChallenges(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	if cleanupPending(&cert.Status) {
		t.Errorf("pending cleanup still recorded after it succeeded: %+v", cert.Status.Order.Challenges)
	}
	if failing.cleanups != 2 {
		t.Errorf("%d cleanups, want 2", failing.cleanups)
	}
}

// cleanupSolver is a solver whose CleanUp fails with err (nil: succeeds).
type cleanupSolver struct {
	solver.Solver
	err      error
	cleanups int
}

func (s *cleanupSolver) Type() string         { return solver.ChallengeDNS01 }
func (s *cleanupSolver) NeedsFinalizer() bool { return true }
func (s *cleanupSolver) CleanUp(context.Context, []solver.Challenge) error {
	s.cleanups++
	return s.err
}

// TestTokensRecorded: the CA's authorizations are read again for a cleanup only when the status
// does not name, for each name of the order at hand, its solver's challenge with its token.
func TestTokensRecorded(t *testing.T) {
	spec := &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{Manual: &certpilotv1alpha1.ManualDNS01{}}}
	names := []string{"a.test", "b.test"}
	challenge := func(name, typ, token string) certpilotv1alpha1.ChallengeStatus {
		c := certpilotv1alpha1.ChallengeStatus{Type: typ, Token: token}
		c.SetIdentifier(name)
		return c
	}
	both := []certpilotv1alpha1.ChallengeStatus{challenge("a.test", "dns-01", "ta"), challenge("b.test", "dns-01", "tb")}
	tests := map[string]struct {
		statusURL  string
		challenges []certpilotv1alpha1.ChallengeStatus
		want       bool
	}{
		"every name with its token":      {statusURL: "https://ca/order/1", challenges: both, want: true},
		"a name without a challenge":     {statusURL: "https://ca/order/1", challenges: both[:1]},
		"a challenge without its token":  {statusURL: "https://ca/order/1", challenges: []certpilotv1alpha1.ChallengeStatus{both[0], challenge("b.test", "dns-01", "")}},
		"another solver's challenge":     {statusURL: "https://ca/order/1", challenges: []certpilotv1alpha1.ChallengeStatus{both[0], challenge("b.test", "http-01", "tb")}},
		"the status records other order": {statusURL: "https://ca/order/0", challenges: both},
		"no challenges recorded":         {statusURL: "https://ca/order/1"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cert := &certpilotv1alpha1.Certificate{Spec: certpilotv1alpha1.CertificateSpec{DNSNames: names, Solver: spec}}
			cert.Status.Order = &certpilotv1alpha1.OrderStatus{URL: tt.statusURL, State: "valid", DNSNames: names, Challenges: tt.challenges}
			run := &certificateRun{cert: cert, order: &acme.Order{URL: "https://ca/order/1"},
				solvers: map[*certpilotv1alpha1.Solver]solver.Solver{spec: &cleanupSolver{}}}
			if got := (&challengeSteps{}).tokensRecorded(run); got != tt.want {
				t.Errorf("tokensRecorded = %v, want %v", got, tt.want)
			}
		})
	}
}
