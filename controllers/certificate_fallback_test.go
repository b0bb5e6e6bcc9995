package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	xacme "golang.org/x/crypto/acme"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/budget"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/renewal"
)

// TestDecideIssuer: which issuer an issuance uses, as a pure function of the Certificate's
// issuers, status.currentIssuer, how the attempt ended and the clock.
func TestDecideIssuer(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	primary := certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "letsencrypt"}
	second := certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "zerossl"}
	third := certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "internal"}
	chain := []certpilotv1alpha1.IssuerReference{primary, second, third}
	at := func(ref certpilotv1alpha1.IssuerReference, failed int32, since time.Duration, reason string) *certpilotv1alpha1.CurrentIssuerStatus {
		return &certpilotv1alpha1.CurrentIssuerStatus{Kind: ref.Kind, Name: ref.Name, FailedAttempts: failed,
			Since: &metav1.Time{Time: now.Add(-since)}, Reason: reason}
	}

	tests := map[string]struct {
		refs      []certpilotv1alpha1.IssuerReference
		current   *certpilotv1alpha1.CurrentIssuerStatus
		failure   issuerFailure
		nextRetry time.Duration // from now; 0: unknown
		notAfter  time.Duration // from now; 0: no certificate served

		want      *certpilotv1alpha1.CurrentIssuerStatus // nil: status.currentIssuer unset
		wantMoved bool
	}{
		"no fallback issuers: nothing tracked": {
			refs: chain[:1], failure: failureOutage,
		},
		"an issuance starts at the first issuer": {
			refs: chain, want: at(primary, 0, 0, ""),
		},
		"it stays there while nothing fails": {
			refs: chain, current: at(primary, 0, time.Hour, ""), want: at(primary, 0, time.Hour, ""),
		},
		"an outage moves on at once": {
			refs: chain, current: at(primary, 0, time.Hour, ""), failure: failureOutage,
			want: at(second, 0, 0, fallbackReasonOutage), wantMoved: true,
		},
		"a rate limit moves on at once": {
			refs: chain, current: at(primary, 0, time.Hour, ""), failure: failureRateLimited,
			want: at(second, 0, 0, fallbackReasonRateLimited), wantMoved: true,
		},
		"a refused order is counted": {
			refs: chain, current: at(primary, 1, time.Hour, ""), failure: failureOther, nextRetry: 10 * time.Minute, notAfter: 30 * 24 * time.Hour,
			want: at(primary, 2, time.Hour, ""),
		},
		"the third failure in a row moves on": {
			refs: chain, current: at(primary, 2, time.Hour, ""), failure: failureOther, nextRetry: 100 * time.Minute, notAfter: 30 * 24 * time.Hour,
			want: at(second, 0, 0, fallbackReasonFailures), wantMoved: true,
		},
		"a failure whose retry comes within a day of expiry moves on": {
			refs: chain, current: at(primary, 0, time.Hour, ""), failure: failureOther, nextRetry: time.Hour, notAfter: 20 * time.Hour,
			want: at(second, 0, 0, fallbackReasonFailures), wantMoved: true,
		},
		"a first failure with time to spare stays": {
			refs: chain, current: at(primary, 0, time.Hour, ""), failure: failureOther, nextRetry: time.Minute, notAfter: 5 * 24 * time.Hour,
			want: at(primary, 1, time.Hour, ""),
		},
		"a first issuance has no expiry to mind": {
			refs: chain, current: at(primary, 0, time.Hour, ""), failure: failureOther, nextRetry: 100 * time.Minute,
			want: at(primary, 1, time.Hour, ""),
		},
		"an issuer not Ready is waited for a while": {
			refs: chain, current: at(primary, 0, time.Minute, ""), failure: failureUnavailable,
			want: at(primary, 0, time.Minute, ""),
		},
		"an issuer not Ready for the grace period is left": {
			refs: chain, current: at(primary, 0, fallbackUnavailableGrace, ""), failure: failureUnavailable,
			want: at(second, 0, 0, fallbackReasonOutage), wantMoved: true,
		},
		"the second issuer fails too: the third": {
			refs: chain, current: at(second, 0, time.Minute, fallbackReasonOutage), failure: failureRateLimited,
			want: at(third, 0, 0, fallbackReasonRateLimited), wantMoved: true,
		},
		"after the last comes the first": {
			refs: chain, current: at(third, 0, time.Minute, fallbackReasonOutage), failure: failureOutage,
			want: at(primary, 0, 0, fallbackReasonOutage), wantMoved: true,
		},
		"an issuer the spec no longer lists: back to the first, its order goes": {
			refs:    []certpilotv1alpha1.IssuerReference{primary, third},
			current: at(second, 1, time.Hour, fallbackReasonOutage),
			want:    at(primary, 0, 0, ""), wantMoved: true,
		},
		"the same name, another kind, is another issuer": {
			refs:    []certpilotv1alpha1.IssuerReference{primary, {Kind: "Issuer", Name: "zerossl"}},
			current: at(second, 0, time.Hour, fallbackReasonOutage),
			want:    at(primary, 0, 0, ""), wantMoved: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := issuerChoiceInput{now: now, refs: tc.refs, current: tc.current, failure: tc.failure}
			if tc.nextRetry != 0 {
				in.nextRetry = now.Add(tc.nextRetry)
			}
			if tc.notAfter != 0 {
				in.notAfter = now.Add(tc.notAfter)
			}
			var before *certpilotv1alpha1.CurrentIssuerStatus
			if tc.current != nil {
				before = tc.current.DeepCopy()
			}
			got := decideIssuer(in)
			if got.moved != tc.wantMoved {
				t.Errorf("moved = %v, want %v", got.moved, tc.wantMoved)
			}
			if fmt.Sprint(describeIssuer(got.current)) != fmt.Sprint(describeIssuer(tc.want)) {
				t.Errorf("current = %s, want %s", describeIssuer(got.current), describeIssuer(tc.want))
			}
			if tc.current != nil && describeIssuer(tc.current) != describeIssuer(before) {
				t.Errorf("the input was changed: %s, was %s", describeIssuer(tc.current), describeIssuer(before))
			}
		})
	}
}

func describeIssuer(c *certpilotv1alpha1.CurrentIssuerStatus) string {
	if c == nil {
		return "<none>"
	}
	since := "<nil>"
	if c.Since != nil {
		since = c.Since.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%s/%s failed=%d since=%s reason=%q", c.Kind, c.Name, c.FailedAttempts, since, c.Reason)
}

// TestClassifyIssuerFailure: what counts as an outage, a rate limit or another failure of the
// issuer; the apiserver's errors and waits that never reached the CA are none.
func TestClassifyIssuerFailure(t *testing.T) {
	withCA := &certificateRun{acme: &acme.Client{}}
	tests := map[string]struct {
		run  *certificateRun
		err  error
		want issuerFailure
	}{
		"no error":               {run: withCA, want: noFailure},
		"issuer not Ready":       {run: &certificateRun{}, err: wait(time.Minute, reasonIssuerNotReady, "x"), want: failureUnavailable},
		"issuer missing":         {run: &certificateRun{}, err: wait(time.Minute, reasonIssuerNotFound, "x"), want: failureUnavailable},
		"account paused":         {run: withCA, err: wait(time.Second, budget.ReasonAccountPaused, "x"), want: failureRateLimited},
		"issuer busy":            {run: withCA, err: wait(time.Second, reasonIssuerBusy, "x"), want: noFailure},
		"recorded failure":       {run: &certificateRun{acme: &acme.Client{}, issuanceFailed: true}, err: wait(time.Minute, "OrderInvalid", "x"), want: failureOther},
		"429":                    {run: withCA, err: &xacme.Error{StatusCode: http.StatusTooManyRequests}, want: failureRateLimited},
		"rateLimited problem":    {run: withCA, err: fmt.Errorf("new order: %w", &xacme.Error{StatusCode: 403, ProblemType: "urn:ietf:params:acme:error:rateLimited"}), want: failureRateLimited},
		"503":                    {run: withCA, err: &xacme.Error{StatusCode: http.StatusServiceUnavailable}, want: failureOutage},
		"connection refused":     {run: withCA, err: fmt.Errorf("new order: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), want: failureOutage},
		"timeout":                {run: withCA, err: fmt.Errorf("polling: %w", context.DeadlineExceeded), want: failureOutage},
		"the CA's directory":     {run: &certificateRun{releaseIssuer: func() {}}, err: fmt.Errorf("directory: %w", &net.OpError{Op: "dial", Err: errors.New("refused")}), want: failureOutage},
		"the CA was not asked":   {run: &certificateRun{}, err: &net.OpError{Op: "dial", Err: errors.New("refused")}, want: noFailure},
		"the apiserver's error":  {run: withCA, err: apierrors.NewServiceUnavailable("etcd"), want: noFailure},
		"a conflict on a Secret": {run: withCA, err: apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, "x", errors.New("changed")), want: noFailure},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := classifyIssuerFailure(tc.run, tc.err); got != tc.want {
				t.Errorf("classifyIssuerFailure(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

// TestServedIssuerDecidesRenewal: a certificate a fallback issuer issued is not reissued for
// coming from another issuer than spec.issuerRef, and its server is compared with that issuer's;
// one from an issuer the Certificate no longer lists is.
func TestServedIssuerDecidesRenewal(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cert := &certpilotv1alpha1.Certificate{Spec: certpilotv1alpha1.CertificateSpec{
		DNSNames:           []string{"www.example.test"},
		IssuerRef:          certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "first"},
		FallbackIssuerRefs: []certpilotv1alpha1.IssuerReference{{Kind: "ClusterIssuer", Name: "second"}},
	}}
	secretFrom := func(name, server string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			annotationIssuerKind: "ClusterIssuer", annotationIssuerName: name, annotationACMEServer: server, annotationACMEAccount: server + "/acct/1",
		}}}
	}
	issuer := func(name, server string) certpilotv1alpha1.GenericIssuer {
		return &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{Server: server}}}
	}

	fromSecond := secretFrom("second", "https://second.test/dir")
	if got := servedIssuerRef(cert, fromSecond); got.Name != "second" {
		t.Errorf("servedIssuerRef = %v, want the fallback issuer", got)
	}
	in := renewalInput(now, cert, issuer("second", "https://second.test/dir"), fromSecond)
	if in.IssuerName != "second" || in.IssuerServer != "https://second.test/dir" {
		t.Errorf("renewal input compares with %s at %s, want second at its server", in.IssuerName, in.IssuerServer)
	}
	if got := recordedIssuer(fromSecond); got == nil || got.Name != "second" || got.Kind != "ClusterIssuer" {
		t.Errorf("recordedIssuer = %v", got)
	}
	fromGone := secretFrom("retired", "https://retired.test/dir")
	if got := servedIssuerRef(cert, fromGone); got.Name != "first" {
		t.Errorf("servedIssuerRef of a Secret from an issuer no longer listed = %v, want spec.issuerRef", got)
	}
	if got := servedIssuerRef(cert, nil); got.Name != "first" {
		t.Errorf("servedIssuerRef without a Secret = %v, want spec.issuerRef", got)
	}

	// ARI replaces goes only to the CA (server and account) that issued the served certificate.
	leafPEM := pki.EncodeChain([][]byte{newTestKey(t).leaf(t, []string{"www.example.test"}).Raw})
	fromSecond.Data = map[string][]byte{corev1.TLSCertKey: leafPEM}
	toFirst := renewalInput(now, cert, issuer("first", "https://first.test/dir"), fromSecond)
	if renewal.CanReplace(toFirst, "https://first.test/dir/acct/1") {
		t.Error("an order at the first CA may name a certificate the second CA issued in replaces")
	}
	toSecond := renewalInput(now, cert, issuer("second", "https://second.test/dir"), fromSecond)
	if !renewal.CanReplace(toSecond, "https://second.test/dir/acct/1") {
		t.Error("an order at the CA that issued the certificate may not name it in replaces")
	}
}
