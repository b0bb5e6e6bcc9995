package controllers

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/budget"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/renewal"
)

// TestDecideIssuance: the decision is a pure function of what was observed (the Certificate, its
// Secret, the issuer) and the clock.
func TestDecideIssuance(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	names := []string{"www.example.test"}
	openOrder := &certpilotv1alpha1.OrderStatus{URL: "https://ca/order/1", State: "pending", DNSNames: names}
	otherNamesOrder := &certpilotv1alpha1.OrderStatus{URL: "https://ca/order/2", State: "pending", DNSNames: []string{"old.example.test"}}
	challenge := func(reason string) []certpilotv1alpha1.ChallengeStatus {
		return []certpilotv1alpha1.ChallengeStatus{{DNSName: names[0], Type: "dns-01", State: "valid", Reason: reason}}
	}
	storedOrder := &certpilotv1alpha1.OrderStatus{URL: "https://ca/order/3", State: "valid", DNSNames: names, Challenges: challenge("")}
	cleanupFailedOrder := &certpilotv1alpha1.OrderStatus{URL: "https://ca/order/3", State: "valid", DNSNames: names,
		Challenges: challenge(cleanupFailedPrefix + "DNS server unreachable")}
	failedOrder := &certpilotv1alpha1.OrderStatus{URL: "https://ca/order/4", State: "invalid", DNSNames: names,
		Challenges: challenge(cleanupFailedPrefix + "DNS server unreachable")}
	lastFailure := metav1.NewTime(now.Add(-30 * time.Second))

	tests := map[string]struct {
		secretMissing bool
		requested     bool
		order         *certpilotv1alpha1.OrderStatus
		// finalizer: the Certificate has challengeFinalizer; solverNeedsFinalizer: one of its
		// solvers needs it (or is not known).
		finalizer, solverNeedsFinalizer bool
		failures                        int32
		// failureReason is the last failure's reason; failedLongAgo puts it beyond
		// budget.FailureMemory.
		failureReason string
		failedLongAgo bool
		specChanged   bool
		// slowDown: the CA asked to wait until a minute from now; slowDownPassed: until a
		// moment ago.
		slowDown, slowDownPassed bool
		// failureShown: the Reconciling condition shows the failure's message (recordFailure's).
		failureShown bool

		wantIssue, wantDrop, wantCleanup, wantDropFinalizer, wantWait, wantForget, wantKept bool
		wantReason                                                                          string // of the wait; default BackingOff
		wantReady                                                                           metav1.ConditionStatus
		wantRequeue                                                                         time.Duration
	}{
		"up to date: requeue at the renewal time": {
			wantReady: metav1.ConditionTrue, wantRequeue: 24 * time.Hour,
		},
		"up to date, the finalizer kept for the next renewal: nothing to do": {
			order: storedOrder, finalizer: true, solverNeedsFinalizer: true, wantReady: metav1.ConditionTrue, wantRequeue: 24 * time.Hour,
		},
		"up to date, the cleanup after storing failed: finish it": {
			order: cleanupFailedOrder, finalizer: true, solverNeedsFinalizer: true, wantCleanup: true, wantReady: metav1.ConditionTrue,
			wantRequeue: 24 * time.Hour,
		},
		"up to date, the cleanup failed and no solver needs the finalizer now: finish it first, keep the finalizer": {
			order: cleanupFailedOrder, finalizer: true, wantCleanup: true, wantReady: metav1.ConditionTrue, wantRequeue: 24 * time.Hour,
		},
		"up to date, no solver needs the finalizer any more: drop it": {
			order: storedOrder, finalizer: true, wantDropFinalizer: true, wantReady: metav1.ConditionTrue, wantRequeue: 24 * time.Hour,
		},
		"up to date, no finalizer, no solver needs one: nothing to do": {
			order: storedOrder, wantReady: metav1.ConditionTrue, wantRequeue: 24 * time.Hour,
		},
		"up to date, order for other names open, no solver needs the finalizer: drop the order first": {
			order: otherNamesOrder, finalizer: true, wantDrop: true, wantReady: metav1.ConditionTrue, wantRequeue: 24 * time.Hour,
		},
		"failed, its cleanup too: back off, the cleanup waits for the next attempt": {
			secretMissing: true, failures: 1, order: failedOrder, finalizer: true, solverNeedsFinalizer: true, wantWait: true,
			wantReady: metav1.ConditionFalse,
		},
		"failed, its cleanup too, the backoff over: finish the cleanup, then issue": {
			secretMissing: true, failures: 1, failedLongAgo: true, order: failedOrder, finalizer: true, solverNeedsFinalizer: true,
			wantIssue: true, wantCleanup: true, wantReady: metav1.ConditionFalse,
		},
		"failed, its cleanup too, the CA asked to slow down: nothing before its time": {
			secretMissing: true, failures: 1, order: failedOrder, slowDown: true, finalizer: true, solverNeedsFinalizer: true,
			wantWait: true, wantReady: metav1.ConditionFalse, wantReason: "CASlowDown",
		},
		"up to date, order for other names open: drop it": {
			order: otherNamesOrder, wantDrop: true, wantReady: metav1.ConditionTrue, wantRequeue: 24 * time.Hour,
		},
		"up to date, its own order open: finish it": {
			order: openOrder, wantIssue: true, wantReady: metav1.ConditionTrue,
		},
		"no Secret: issue": {
			secretMissing: true, wantIssue: true, wantReady: metav1.ConditionFalse,
		},
		"renewal requested: issue, still Ready": {
			requested: true, wantIssue: true, wantReady: metav1.ConditionTrue,
		},
		"failed a moment ago: back off": {
			secretMissing: true, failures: 1, wantWait: true, wantReady: metav1.ConditionFalse,
		},
		"failed a moment ago, its message shown: back off, keeping it": {
			secretMissing: true, failures: 1, failureShown: true, wantWait: true, wantReady: metav1.ConditionFalse, wantReason: "OrderInvalid",
		},
		"failed, spec changed since: issue now": {
			secretMissing: true, failures: 1, specChanged: true, wantIssue: true, wantReady: metav1.ConditionFalse,
		},
		"failed, renewal requested: issue now": {
			requested: true, failures: 1, wantIssue: true, wantReady: metav1.ConditionTrue,
		},
		"the CA refused the order as written, spec changed since: issue now": {
			secretMissing: true, failures: 2, failureReason: "OrderRejected", specChanged: true, wantIssue: true, wantReady: metav1.ConditionFalse,
		},
		"a validation failed, spec changed since: back off": {
			secretMissing: true, failures: 1, failureReason: "OrderInvalid", specChanged: true, wantWait: true, wantKept: true, wantReady: metav1.ConditionFalse,
		},
		"a validation failed, renewal requested: back off, still Ready": {
			requested: true, failures: 1, failureReason: "OrderInvalid", wantWait: true, wantKept: true, wantReady: metav1.ConditionTrue,
		},
		"rate limited, spec changed since: back off": {
			secretMissing: true, failures: 3, failureReason: "CASlowDown", specChanged: true, wantWait: true, wantKept: true, wantReady: metav1.ConditionFalse,
		},
		"a validation failed long ago, spec changed since: forget it and issue": {
			secretMissing: true, failures: 5, failureReason: "OrderInvalid", failedLongAgo: true, specChanged: true,
			wantIssue: true, wantForget: true, wantReady: metav1.ConditionFalse,
		},
		"a validation failed long ago, nothing changed: retried, the count kept": {
			secretMissing: true, failures: 5, failureReason: "OrderInvalid", failedLongAgo: true, wantIssue: true, wantReady: metav1.ConditionFalse,
		},
		"failed, order still open: resume it": {
			secretMissing: true, failures: 1, order: openOrder, wantIssue: true, wantReady: metav1.ConditionFalse,
		},
		"the CA asked to slow down, order open: wait for it": {
			secretMissing: true, failures: 1, order: openOrder, slowDown: true, wantWait: true, wantReady: metav1.ConditionFalse,
			wantReason: "CASlowDown",
		},
		"the CA asked to slow down, spec changed since: still wait": {
			secretMissing: true, failures: 1, specChanged: true, slowDown: true, wantWait: true, wantReady: metav1.ConditionFalse,
			wantReason: "CASlowDown",
		},
		"the CA asked to slow down, renewal of a good certificate open: wait, still Ready": {
			order: openOrder, failures: 1, slowDown: true, wantWait: true, wantReady: metav1.ConditionTrue, wantReason: "CASlowDown",
		},
		"the CA's wait has passed, order open: resume it": {
			secretMissing: true, failures: 1, order: openOrder, slowDownPassed: true, wantIssue: true, wantReady: metav1.ConditionFalse,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cert := &certpilotv1alpha1.Certificate{}
			cert.Generation = 3
			cert.Spec.DNSNames = names
			cert.Status.Order = tt.order
			cert.Status.NotAfter = &metav1.Time{Time: now.Add(30 * 24 * time.Hour)}
			if tt.finalizer {
				cert.Finalizers = []string{challengeFinalizer}
			}
			if tt.failures > 0 {
				cert.Status.FailedIssuanceAttempts, cert.Status.LastFailureTime = tt.failures, &lastFailure
				cert.Status.LastFailureReason = tt.failureReason
				if tt.failedLongAgo {
					cert.Status.LastFailureTime = &metav1.Time{Time: now.Add(-budget.FailureMemory - time.Hour)}
				}
			}
			if tt.failureShown {
				cert.Status.Conditions = []metav1.Condition{{Type: certpilotv1alpha1.ConditionReconciling, Status: metav1.ConditionTrue,
					Reason: "OrderInvalid", Message: failureMessagePrefix + "1, next in 1m0s): the CA marked order … invalid"}}
			}
			switch {
			case tt.slowDown:
				cert.Status.NextAttemptTime = &metav1.Time{Time: now.Add(time.Minute)}
			case tt.slowDownPassed:
				cert.Status.NextAttemptTime = &metav1.Time{Time: now.Add(-time.Second)}
			}
			observed := cert.Generation
			if tt.specChanged {
				observed--
			}
			cert.Spec.RenewBefore = &metav1.Duration{Duration: 7 * 24 * time.Hour}
			if tt.requested {
				cert.Annotations = map[string]string{certpilotv1alpha1.AnnotationRenew: "now"}
			}
			in := decisionInput{now: now, cert: cert, observedGeneration: observed, finalizerNeeded: tt.solverNeedsFinalizer}
			if !tt.secretMissing {
				in.secret, in.leaf = secretOf(t, validSecret(t, names, now))
			}
			d := decideIssuance(in)

			issue := d.requeueAfter == 0 && d.wait == nil
			if issue != tt.wantIssue || d.dropOrder != tt.wantDrop || d.finishCleanup != tt.wantCleanup || (d.wait != nil) != tt.wantWait {
				t.Errorf("issue %v, drop %v, cleanup %v, wait %v; want %v, %v, %v, %v (trigger %+v)",
					issue, d.dropOrder, d.finishCleanup, d.wait, tt.wantIssue, tt.wantDrop, tt.wantCleanup, tt.wantWait, d.trigger)
			}
			if w, ok := asWait(d.wait); ok && strings.HasSuffix(w.Message, backoffKept) != tt.wantKept {
				t.Errorf("wait message %q; want the note that the edit did not lift the backoff: %v", w.Message, tt.wantKept)
			}
			if d.dropFinalizer != tt.wantDropFinalizer {
				t.Errorf("dropFinalizer = %v, want %v", d.dropFinalizer, tt.wantDropFinalizer)
			}
			if d.forgetFailures != tt.wantForget {
				t.Errorf("forgetFailures = %v, want %v", d.forgetFailures, tt.wantForget)
			}
			if d.ready == nil || d.ready.Status != tt.wantReady {
				t.Errorf("ready = %+v, want %s", d.ready, tt.wantReady)
			}
			if tt.wantRequeue != 0 && d.requeueAfter != tt.wantRequeue {
				t.Errorf("requeueAfter = %s, want %s", d.requeueAfter, tt.wantRequeue)
			}
			wantReason := tt.wantReason
			if wantReason == "" {
				wantReason = "BackingOff"
			}
			if w, ok := asWait(d.wait); tt.wantWait && (!ok || w.Reason != wantReason) {
				t.Errorf("wait = %v, want %s", d.wait, wantReason)
			}
		})
	}
}

// secretOf is the certificate Secret that holds s, and its leaf.
func secretOf(t *testing.T, s *renewal.Secret) (*corev1.Secret, *x509.Certificate) {
	t.Helper()
	leaf, err := pki.ParseLeaf(s.CertificatePEM)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{Data: map[string][]byte{corev1.TLSCertKey: s.CertificatePEM, corev1.TLSPrivateKeyKey: s.PrivateKeyPEM}}, leaf
}

// validSecret is a certificate Secret for names, valid for 30 days from now, self-signed with
// the default key type.
func validSecret(t *testing.T, names []string, now time.Time) *renewal.Secret {
	t.Helper()
	key, err := pki.GenerateKey(certpilotv1alpha1.KeyAlgorithmECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &renewal.Secret{CertificatePEM: pki.EncodeChain([][]byte{der}), PrivateKeyPEM: keyPEM}
}

// TestOnlyProgress: a short wait on the CA inside an order the written status records, or the
// claim records since less than progressWindow, is not written on its own; anything else is.
func TestOnlyProgress(t *testing.T) {
	issuing := []metav1.Condition{{Type: certpilotv1alpha1.ConditionIssuing, Status: metav1.ConditionTrue}}
	order := &certpilotv1alpha1.OrderStatus{URL: "https://ca/order/1", State: "pending"}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		written    *certpilotv1alpha1.OrderStatus
		conditions []metav1.Condition
		// claimOrder and created: the order as the claim records it.
		claimOrder string
		created    time.Time
		err        error
		want       bool
	}{
		"validation, order in the claim": {claimOrder: order.URL, created: now.Add(-time.Second), err: wait(time.Second, reasonWaitingForValidation, "v"), want: true},
		"order in the claim for long":    {claimOrder: order.URL, created: now.Add(-progressWindow), err: wait(time.Second, reasonWaitingForValidation, "v")},
		"another order in the claim":     {claimOrder: "https://ca/order/0", created: now, err: wait(time.Second, reasonWaitingForValidation, "v")},
		"claim, creation unknown":        {claimOrder: order.URL, err: wait(time.Second, reasonWaitingForValidation, "v")},
		"claim, self-check failed":       {claimOrder: order.URL, created: now, err: wait(time.Second, "SelfCheckFailed", "s")},
		"validation, recorded order":     {written: order, conditions: issuing, err: wait(time.Second, reasonWaitingForValidation, "v"), want: true},
		"certificate, recorded order":    {written: order, conditions: issuing, err: wait(time.Second, reasonWaitingForCertificate, "c"), want: true},
		"long wait":                      {written: order, conditions: issuing, err: wait(time.Minute, reasonWaitingForValidation, "v")},
		"self-check failed":              {written: order, conditions: issuing, err: wait(time.Second, "SelfCheckFailed", "s")},
		"order not written yet":          {conditions: issuing, err: wait(time.Second, reasonWaitingForValidation, "v")},
		"written status not issuing":     {written: order, err: wait(time.Second, reasonWaitingForValidation, "v")},
		"an error":                       {written: order, conditions: issuing, err: errors.New("connection refused")},
		"done":                           {written: order, conditions: issuing},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			base := &certpilotv1alpha1.Certificate{}
			base.Status.Order, base.Status.Conditions = tt.written, tt.conditions
			cert := base.DeepCopy()
			cert.Status.Order = order.DeepCopy()
			run := &certificateRun{cert: cert, patchBase: base, now: now, claimOrder: tt.claimOrder, orderCreated: tt.created}
			if got := onlyProgress(run, tt.err); got != tt.want {
				t.Errorf("onlyProgress = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSecretBehindStatus(t *testing.T) {
	const stored, earlier = "https://ca.test/order/2", "https://ca.test/order/1"
	secretOf := func(order string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{annotationOrder: order}}}
	}
	tests := map[string]struct {
		state  string
		secret *corev1.Secret
		want   bool
	}{
		"the cache holds the stored order's certificate": {state: acme.StatusValid, secret: secretOf(stored)},
		"the cache holds the previous certificate":       {state: acme.StatusValid, secret: secretOf(earlier), want: true},
		"an order still open: the old one is current":    {state: acme.StatusProcessing, secret: secretOf(earlier)},
		"no Secret in the cache":                         {state: acme.StatusValid},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cert := &certpilotv1alpha1.Certificate{Status: certpilotv1alpha1.CertificateStatus{
				Order: &certpilotv1alpha1.OrderStatus{URL: stored, State: tt.state}}}
			if got := secretBehindStatus(cert, tt.secret); got != tt.want {
				t.Errorf("secretBehindStatus = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDecideRenewalSchedule: when the served certificate renews, whether the CA's renewal window
// is due, and what the status keeps of it.
func TestDecideRenewalSchedule(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	names := []string{"www.example.test"}
	secret, leaf := secretOf(t, validSecret(t, names, now)) // from now-1h, for 30 days
	serial := fmt.Sprintf("%x", leaf.SerialNumber)
	ari := &certpilotv1alpha1.ClusterIssuer{}
	noARI := &certpilotv1alpha1.ClusterIssuer{}
	noARI.Spec.ACME.DisableRenewalInfo = true
	window := func(start, end time.Time) *certpilotv1alpha1.RenewalInfoStatus {
		return &certpilotv1alpha1.RenewalInfoStatus{WindowStart: &metav1.Time{Time: start}, WindowEnd: &metav1.Time{Time: end}}
	}
	safePoint := leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 10)
	tests := map[string]struct {
		issuer       certpilotv1alpha1.GenericIssuer
		statusSerial string
		info         *certpilotv1alpha1.RenewalInfoStatus
		due          time.Time
		expired      bool

		wantFetch  bool
		wantSource string
		wantKeep   bool
		// wantRenewal, when set, is the renewal time (the windows here are a second wide).
		wantRenewal time.Time
	}{
		"ARI, never fetched: fetch": {issuer: ari, statusSerial: serial, wantFetch: true, wantSource: renewal.SourceFallback, wantKeep: true},
		"ARI, fetched, next fetch later: no fetch": {issuer: ari, statusSerial: serial, due: now.Add(time.Hour),
			wantSource: renewal.SourceFallback, wantKeep: true},
		"ARI, next fetch passed: fetch": {issuer: ari, statusSerial: serial, due: now.Add(-time.Second), wantFetch: true,
			wantSource: renewal.SourceFallback, wantKeep: true},
		"ARI off: no fetch, no window kept": {issuer: noARI, statusSerial: serial, info: window(now.Add(time.Hour), now.Add(2*time.Hour)),
			wantSource: renewal.SourceFallback},
		"issuer not read: no fetch": {statusSerial: serial, wantSource: renewal.SourceFallback},
		"a window inside the safe part: a moment in it": {issuer: ari, statusSerial: serial, due: now.Add(time.Hour),
			info: window(now.Add(20*24*time.Hour), now.Add(20*24*time.Hour+time.Second)), wantSource: renewal.SourceARI, wantKeep: true,
			wantRenewal: now.Add(20 * 24 * time.Hour)},
		"a window reaching past notAfter: the safe point": {issuer: ari, statusSerial: serial, due: now.Add(time.Hour),
			info: window(leaf.NotAfter.Add(-30*time.Second), leaf.NotAfter.Add(24*time.Hour)), wantSource: renewal.SourceARI, wantKeep: true,
			wantRenewal: safePoint},
		"a new certificate: the old one's window is dropped, fetch": {issuer: ari, statusSerial: "0ff",
			info: window(now.Add(time.Hour), now.Add(2*time.Hour)), wantFetch: true, wantSource: renewal.SourceFallback},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cert := &certpilotv1alpha1.Certificate{}
			cert.Spec.DNSNames = names
			cert.Status.SerialNumber, cert.Status.RenewalInfo = tt.statusSerial, tt.info
			in := decisionInput{now: now, cert: cert, secret: secret, leaf: leaf, issuer: tt.issuer, renewalInfoDue: tt.due}
			d := decideIssuance(in)
			if d.fetchRenewalInfo != tt.wantFetch || d.current.renewalTimeSource != tt.wantSource || d.current.keepRenewalInfo != tt.wantKeep {
				t.Errorf("fetch %v, source %q, keep %v; want %v, %q, %v", d.fetchRenewalInfo, d.current.renewalTimeSource, d.current.keepRenewalInfo,
					tt.wantFetch, tt.wantSource, tt.wantKeep)
			}
			if offset := d.current.renewalTime.Sub(tt.wantRenewal); !tt.wantRenewal.IsZero() && (offset < 0 || offset >= time.Second) {
				t.Errorf("renewal time %s, want %s (or within a second after it)", d.current.renewalTime, tt.wantRenewal)
			}
			if !d.current.renewalTime.Before(leaf.NotAfter) {
				t.Errorf("renewal time %s is not before notAfter %s", d.current.renewalTime, leaf.NotAfter)
			}
			if !tt.due.IsZero() && tt.due.After(now) && d.requeueAfter > tt.due.Sub(now) {
				t.Errorf("requeueAfter %s passes the next fetch in %s", d.requeueAfter, tt.due.Sub(now))
			}
			status := cert.Status
			recordCurrent(&status, d.current)
			if status.SerialNumber != serial || (status.RenewalInfo != nil) != (tt.wantKeep && tt.info != nil) {
				t.Errorf("recorded serial %q, renewal info %+v", status.SerialNumber, status.RenewalInfo)
			}
		})
	}
}
