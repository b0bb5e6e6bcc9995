package controllers

import (
	"context"
	"errors"
	"net"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/budget"
	"github.com/certpilot/certpilot/internal/renewal"
)

// Issuer fallback: a Certificate lists its issuers in order (spec.issuerRef, then
// spec.fallbackIssuerRefs). An issuance starts at the first; status.currentIssuer records the
// one it uses and its failures there, so the count survives restarts. decideIssuer (pure) moves
// the issuance to the next issuer when the current one
//
//   - has an outage: the CA cannot be reached, times out or answers 5xx, or the issuer has not
//     been Ready (or not existed) for fallbackUnavailableGrace since the issuance came to it;
//   - rate-limits the account: 429 or a rateLimited problem, or the account's new orders are
//     paused after another Certificate's rate limit (AccountPaused);
//   - fails fallbackAfterFailures times in a row for any other reason (the CA refuses the order,
//     a validation fails), or fewer when its next retry would come within fallbackExpiryMargin
//     of the served certificate's expiry.
//
// After the last issuer comes the first again, at the pace of the failure backoff; a move to a
// later issuer is tried at once. A move drops the open order (its challenge responses first):
// an order is never finished at another CA than the one that opened it. A stored certificate
// ends the issuance: the next one (the renewal) starts at the first issuer again.

// Thresholds of decideIssuer.
const (
	// fallbackAfterFailures is how many failed attempts in a row (other than outages and rate
	// limits) move an issuance to the next issuer.
	fallbackAfterFailures = 3
	// fallbackExpiryMargin: an issuer whose next retry comes later than this before the served
	// certificate's expiry is left at once.
	fallbackExpiryMargin = 24 * time.Hour
	// fallbackUnavailableGrace is how long an issuance waits for an issuer that is not Ready (or
	// does not exist) before it moves on: an issuer created with its Certificates registers its
	// account in a moment.
	fallbackUnavailableGrace = 2 * time.Minute
	// fallbackRetry is how soon an issuance that moved to another issuer tries it.
	fallbackRetry = time.Second
)

// Reasons an issuance moves to the next issuer (status.currentIssuer.reason).
const (
	fallbackReasonOutage      = "Outage"
	fallbackReasonRateLimited = "RateLimited"
	fallbackReasonFailures    = "Failures"
)

// issuerFailure classifies how an attempt at the current issuer ended.
type issuerFailure int

const (
	// noFailure: the attempt did not fail (or did not reach the issuer).
	noFailure issuerFailure = iota
	// failureUnavailable: the issuer does not exist or is not Ready.
	failureUnavailable
	// failureOutage: the CA could not be reached, timed out or answered 5xx.
	failureOutage
	// failureRateLimited: the CA refused with 429 or rateLimited.
	failureRateLimited
	// failureOther: the CA refused the request or a validation failed (recordFailure).
	failureOther
)

// issuerChoiceInput is what decideIssuer reads.
type issuerChoiceInput struct {
	now time.Time
	// refs are the Certificate's issuers in order (Certificate.IssuerRefs).
	refs []certpilotv1alpha1.IssuerReference
	// current is status.currentIssuer.
	current *certpilotv1alpha1.CurrentIssuerStatus
	// failure is how this reconcile's attempt at current ended.
	failure issuerFailure
	// nextRetry is when current would be tried again after a failureOther (zero: unknown).
	nextRetry time.Time
	// notAfter is the served certificate's expiry (zero: none is served).
	notAfter time.Time
}

// issuerChoice is what decideIssuer concludes.
type issuerChoice struct {
	// current is what status.currentIssuer becomes (nil: no fallback issuers, nothing to track).
	current *certpilotv1alpha1.CurrentIssuerStatus
	// moved: the issuance left the issuer it used (its open order must go).
	moved bool
}

// decideIssuer chooses the issuer of the issuance in progress, as a pure function of the
// Certificate's issuers, its status and the clock (the rules are above).
func decideIssuer(in issuerChoiceInput) issuerChoice {
	if len(in.refs) < 2 {
		return issuerChoice{}
	}
	index := issuerIndex(in.refs, in.current)
	var current certpilotv1alpha1.CurrentIssuerStatus
	var choice issuerChoice
	if index < 0 {
		// The issuance starts, or the issuer it used left the spec: start at the first.
		index = 0
		current = certpilotv1alpha1.CurrentIssuerStatus{Kind: in.refs[0].Kind, Name: in.refs[0].Name, Since: timePtr(in.now)}
		choice.moved = in.current != nil
	} else {
		current = *in.current.DeepCopy()
	}
	choice.current = &current
	if in.failure == noFailure {
		return choice
	}
	reason := ""
	switch in.failure {
	case failureUnavailable:
		if current.Since != nil && in.now.Sub(current.Since.Time) >= fallbackUnavailableGrace {
			reason = fallbackReasonOutage
		}
	case failureOutage:
		current.FailedAttempts++
		reason = fallbackReasonOutage
	case failureRateLimited:
		current.FailedAttempts++
		reason = fallbackReasonRateLimited
	case failureOther:
		current.FailedAttempts++
		nearExpiry := !in.notAfter.IsZero() && !in.nextRetry.IsZero() && !in.nextRetry.Before(in.notAfter.Add(-fallbackExpiryMargin))
		if current.FailedAttempts >= fallbackAfterFailures || nearExpiry {
			reason = fallbackReasonFailures
		}
	}
	if reason == "" {
		return choice
	}
	next := in.refs[(index+1)%len(in.refs)]
	choice.current = &certpilotv1alpha1.CurrentIssuerStatus{Kind: next.Kind, Name: next.Name, Since: timePtr(in.now), Reason: reason}
	choice.moved = true
	return choice
}

// issuerIndex is the position of current among refs, -1 when it is not one of them.
func issuerIndex(refs []certpilotv1alpha1.IssuerReference, current *certpilotv1alpha1.CurrentIssuerStatus) int {
	if current == nil {
		return -1
	}
	for i, ref := range refs {
		if ref.Name == current.Name && ref.KindOrDefault() == (certpilotv1alpha1.IssuerReference{Kind: current.Kind}).KindOrDefault() {
			return i
		}
	}
	return -1
}

// attemptIssuerRef is the issuer the Certificate's issuance uses: status.currentIssuer while it
// is one of the Certificate's issuers, else spec.issuerRef.
func attemptIssuerRef(cert *certpilotv1alpha1.Certificate) certpilotv1alpha1.IssuerReference {
	refs := cert.IssuerRefs()
	if i := issuerIndex(refs, cert.Status.CurrentIssuer); i >= 0 {
		return refs[i]
	}
	return refs[0]
}

// servedIssuerRef is the issuer that issued the certificate in secret, as the Secret records it,
// when it is one of the Certificate's issuers; else spec.issuerRef (a Secret from an issuer the
// Certificate no longer names is reissued: renewal.ReasonIssuerChanged).
func servedIssuerRef(cert *certpilotv1alpha1.Certificate, secret *corev1.Secret) certpilotv1alpha1.IssuerReference {
	refs := cert.IssuerRefs()
	if secret != nil {
		recorded := &certpilotv1alpha1.CurrentIssuerStatus{Kind: secret.Annotations[annotationIssuerKind], Name: secret.Annotations[annotationIssuerName]}
		if i := issuerIndex(refs, recorded); i >= 0 {
			return refs[i]
		}
	}
	return refs[0]
}

// movedOnUntried reports whether the issuance moved to a later issuer after a failure and has
// not tried it yet: the failure backoff, which counts the attempts at the issuers before, does
// not hold it back (a move back to the first issuer waits for it).
func movedOnUntried(cert *certpilotv1alpha1.Certificate) bool {
	current := cert.Status.CurrentIssuer
	return current != nil && current.Reason != "" && current.FailedAttempts == 0 && issuerIndex(cert.IssuerRefs(), current) > 0
}

// classifyIssuerFailure is how a reconcile's attempt at its issuer ended, from the steps' error
// and what the steps recorded.
func classifyIssuerFailure(run *certificateRun, err error) issuerFailure {
	if w, ok := asWait(err); ok && (w.Reason == reasonIssuerNotFound || w.Reason == reasonIssuerNotReady) {
		return failureUnavailable
	}
	if w, ok := asWait(err); ok && w.Reason == budget.ReasonAccountPaused {
		return failureRateLimited // the account's CA rate-limited another Certificate of the namespace
	}
	if run.issuanceFailed {
		return failureOther
	}
	if err == nil || (run.acme == nil && run.releaseIssuer == nil) {
		return noFailure // the CA was not asked (resolveIssuer takes the issuer's gate slot just before)
	}
	if status, ok := acme.StatusCodeOf(err); ok {
		switch {
		case status == 429 || acme.IsRateLimited(err):
			return failureRateLimited
		case status >= 500:
			return failureOutage
		}
		return noFailure
	}
	var apiStatus apierrors.APIStatus
	if errors.As(err, &apiStatus) {
		return noFailure // the apiserver's, not the CA's
	}
	var netErr net.Error
	var urlErr *url.Error
	if errors.As(err, &netErr) || errors.As(err, &urlErr) || errors.Is(err, context.DeadlineExceeded) {
		return failureOutage
	}
	return noFailure
}

// issuerFallback applies decideIssuer after each reconcile of an issuance.
type issuerFallback struct {
	records    orderRecords
	challenges *challengeSteps
	recorder   recorder.EventRecorder
}

// afterAttempt records how the attempt at the current issuer ended in status.currentIssuer and,
// when the issuance moves to another issuer, drops the open order (challenge responses first),
// lifts the first CA's slow-down and tries the next issuer in a moment. err is what the reconcile
// returns; failure is how classifyIssuerFailure judged the steps' error.
func (f issuerFallback) afterAttempt(ctx context.Context, run *certificateRun, failure issuerFailure, err error) error {
	cert := run.cert
	if len(cert.Spec.FallbackIssuerRefs) == 0 {
		cert.Status.CurrentIssuer = nil
		return err
	}
	if !issuing(run) {
		cert.Status.CurrentIssuer = nil // between issuances
		return err
	}
	in := issuerChoiceInput{now: run.now, refs: cert.IssuerRefs(), current: cert.Status.CurrentIssuer, failure: failure}
	if cert.Status.NotAfter != nil {
		in.notAfter = cert.Status.NotAfter.Time
	}
	if w, ok := asWait(err); ok {
		in.nextRetry = run.now.Add(w.After)
	} else if s, ok := asStalled(err); ok && s.After > 0 {
		in.nextRetry = run.now.Add(s.After)
	}
	choice := decideIssuer(in)
	from := attemptIssuerRef(cert)
	cert.Status.CurrentIssuer = choice.current
	if !choice.moved {
		return err
	}
	// The open order belongs to the CA of the issuer left behind.
	cleanupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if orderOpen(cert) {
		// A failed order (recordFailure) stays in the status with its reasons; an open one goes.
		if cleanupErr := f.challenges.removeChallenges(cleanupCtx, run); cleanupErr != nil {
			ctrl.LoggerFrom(ctx).Error(cleanupErr, "Removing the challenge responses of the order left behind failed")
		}
		if abandonErr := f.records.abandonOrder(cleanupCtx, run); abandonErr != nil {
			return errors.Join(err, abandonErr)
		}
	}
	cert.Status.NextAttemptTime = nil // the slow-down was the other CA's
	if !run.failureRecorded && (failure == failureOutage || failure == failureUnavailable) {
		// Counted, so that a round through issuers that are all down backs off.
		cert.Status.FailedIssuanceAttempts++
		cert.Status.LastFailureTime = &metav1.Time{Time: run.now}
	}
	to := choice.current
	f.recorder.Eventf(cert, nil, corev1.EventTypeWarning, "IssuerFallback", "Issue",
		"Issuance moves from %s %q to %s %q (%s)", from.KindOrDefault(), from.Name, to.Kind, to.Name, to.Reason)
	ctrl.LoggerFrom(ctx).Info("Issuance moves to the next issuer", "from", from.Name, "to", to.Name, "reason", to.Reason)
	after := fallbackRetry
	if issuerIndex(cert.IssuerRefs(), to) == 0 {
		// Every issuer failed: the first again, at the backoff's pace.
		after = max(retryTime(&cert.Status, run.now, 0).Sub(run.now), fallbackRetry)
	}
	return wait(after, "IssuerFallback", "Issuance moves from %s %q to %s %q (%s); next attempt at %s",
		from.KindOrDefault(), from.Name, to.Kind, to.Name, to.Reason, run.now.Add(after).UTC().Format(time.RFC3339))
}

// issuing reports whether the reconcile works on an issuance: the decision issues, or an order
// is open.
func issuing(run *certificateRun) bool {
	return run.trigger.Reason != "" || orderOpen(run.cert)
}

// recordIssuedBy records in the status the issuer of a stored certificate, and ends the issuance:
// the next starts at the first issuer again.
func recordIssuedBy(run *certificateRun) {
	run.cert.Status.IssuerRef = &certpilotv1alpha1.IssuerReference{Kind: run.issuer.Kind(), Name: run.issuer.GetName()}
	run.cert.Status.CurrentIssuer = nil
	run.trigger = renewal.Trigger{} // nothing left to issue in this reconcile
}

// recordedIssuer is the issuer a certificate Secret records as the certificate's (nil: none).
func recordedIssuer(secret *corev1.Secret) *certpilotv1alpha1.IssuerReference {
	if secret == nil || secret.Annotations[annotationIssuerName] == "" {
		return nil
	}
	ref := certpilotv1alpha1.IssuerReference{Kind: secret.Annotations[annotationIssuerKind], Name: secret.Annotations[annotationIssuerName]}
	ref.Kind = ref.KindOrDefault()
	return &ref
}
