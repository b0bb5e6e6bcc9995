package controllers

import (
	"context"
	"fmt"
	"time"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/budget"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// failureReporter records failed issuances and the CA's slow-downs in the status, the metrics
// and Events, with the backoff that follows.
type failureReporter struct {
	recorder recorder.EventRecorder
	clock    clock.PassiveClock
	// orders pauses the account's new orders after a rate limit.
	orders orderBudget
}

// recordFailure counts a failed issuance, tells the user (condition and Warning Event), marks
// the challenge responses for removal (the step runner removes them) and backs off: about 1m,
// 10m, 100m, then daily (sooner near or after expiry). A permanent failure (the CA refuses the
// request itself, not a validation) also sets Stalled: it needs a change of the spec, and is
// retried only at the backoff's pace.
func (f failureReporter) recordFailure(ctx context.Context, run *certificateRun, permanent bool, reason, format string, args ...any) error {
	message := fmt.Sprintf(format, args...)
	status := &run.cert.Status
	status.FailedIssuanceAttempts++
	run.failureRecorded = true
	issuances.WithLabelValues("failure", reason).Inc()
	status.LastFailureTime, status.LastFailureReason = &metav1.Time{Time: run.now}, reason
	if status.Order != nil {
		status.Order.State = acme.StatusInvalid
	}
	f.recorder.Eventf(run.cert, nil, corev1.EventTypeWarning, reason, "Issue", "Issuance failed: %s", message)
	ctrl.LoggerFrom(ctx).Info("Issuance failed", "reason", reason, "message", message, "attempts", status.FailedIssuanceAttempts)
	run.issuanceFailed = true
	// The backoff, never so long that the served certificate expires while a retry could still
	// succeed, and hourly at most once it has (renewal.RetryTime; decide applies the same).
	backoff := retryTime(status, run.now, 0).Sub(run.now)
	summary := fmt.Sprintf(failureMessagePrefix+"%d, next in %s): %s", status.FailedIssuanceAttempts, backoff, message)
	if permanent {
		return &stalledError{Reason: reason, Message: summary, After: backoff}
	}
	return wait(backoff, reason, "%s", summary)
}

// failureMessagePrefix starts the message of a failed issuance (recordFailure), which a
// reconcile during the backoff keeps.
const failureMessagePrefix = "Issuance failed (attempt "

// slowedDown turns the CA asking to slow down (429 or 503, rateLimited, serverInternal) into a
// wait of what it asked for: a failed attempt, counted and announced, retried at
// renewal.RetryTime (the backoff, at least the CA's Retry-After, never so late that the served
// certificate expires first); an open order is kept and resumed. Other errors are returned as
// they are.
func (f failureReporter) slowedDown(ctx context.Context, run *certificateRun, err error) error {
	retryAfter, slowDown := acme.RetryAfterOf(err)
	if !slowDown {
		return err
	}
	status := &run.cert.Status
	status.FailedIssuanceAttempts++
	status.LastFailureTime, status.LastFailureReason = &metav1.Time{Time: run.now}, budget.ReasonCASlowDown
	f.orders.rateLimited(ctx, run, err, retryAfter)
	// Counted from now, when the answer came, not from the reconcile's start (run.now): the
	// refused request may have come seconds into the reconcile. Whole seconds (the status's
	// precision), rounded up: never earlier than the CA asked.
	next := retryTime(status, f.clock.Now(), retryAfter)
	if rounded := next.Truncate(time.Second); rounded.Before(next) {
		next = rounded.Add(time.Second)
	}
	// Recorded, so that no reconcile before then (woken by a Secret or spec change, or a
	// manager restart) sends anything to the CA, not even to resume the open order.
	status.NextAttemptTime = &metav1.Time{Time: next}
	run.failureRecorded = true
	issuances.WithLabelValues("failure", "CASlowDown").Inc()
	f.recorder.Eventf(run.cert, nil, corev1.EventTypeWarning, "CASlowDown", "Issue",
		"The CA asked to slow down (attempt %d); next attempt at %s: %v", status.FailedIssuanceAttempts, next.UTC().Format(time.RFC3339), err)
	return wait(next.Sub(f.clock.Now()), "CASlowDown", "The CA asked to slow down (attempt %d, Retry-After %s); next attempt at %s: %v",
		status.FailedIssuanceAttempts, retryAfter, next.UTC().Format(time.RFC3339), err)
}
