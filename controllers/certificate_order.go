package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/renewal"
)

// ensureOrder resumes the open order (recorded in the status or the claim, restoreOrder), or
// creates one and writes it to the claim (recordOrder) before any challenge is touched, so a
// controller killed at any point after that resumes it.
func (r *CertificateReconciler) ensureOrder(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	cert := run.cert
	if recorded := cert.Status.Order; orderOpen(cert) && sameNames(recorded.DNSNames, cert.Spec.DNSNames) {
		order, err := run.acme.GetOrder(ctx, recorded.URL)
		switch {
		case err == nil && order.Status != acme.StatusInvalid:
			run.order = order
			recordOrderState(recorded, order.Status)
			return ctrl.Result{}, nil
		case err == nil:
			return ctrl.Result{}, r.recordFailure(ctx, run, false, "OrderInvalid", "the CA marked order %s invalid: %s", order.URL, orderProblem(ctx, run, order))
		case !acme.IsPermanent(err):
			return ctrl.Result{}, err
		}
		// The CA forgot the order (expired, deleted): start a new one.
		ctrl.LoggerFrom(ctx).Info("Abandoned an order the CA no longer knows", "order", recorded.URL, "error", err.Error())
	}
	if orderOpen(cert) {
		// The names changed while an order was open: its challenges are no longer wanted.
		if err := r.removeChallenges(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	}

	// A secretName claimed by another Certificate stops this one before it orders. A Secret
	// this Certificate already controls is claim enough: another Certificate stops at it in
	// decide.
	if run.observed.secret == nil {
		if err := r.claims().checkClaimable(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	}
	if claim := r.claims().cached(ctx, run); claim == nil || claim.Annotations[annotationKeyRevision] != nextKeyRevision(cert) {
		// The key the write that records the order stores. A key that takes long (RSA, in a
		// burst) is made in the background: the worker goes on with other Certificates, and
		// this one is woken when its key is ready.
		keyPEM, ready, err := r.keys.take(cert, nextKeyRevision(cert))
		if err != nil {
			return ctrl.Result{}, err
		}
		if !ready {
			return ctrl.Result{}, wait(keyWakeFallback, reasonGeneratingKey, "Generating the private key")
		}
		run.nextKey = keyPEM
	}
	request := acme.OrderRequest{DNSNames: cert.Spec.DNSNames, Profile: run.issuer.GetSpec().ACME.Profile, Replaces: r.replacesFor(run)}
	order, err := run.acme.CreateOrder(ctx, request)
	if request.Replaces != "" && acme.IsAlreadyReplaced(err) {
		// The certificate was replaced already (an order of a run that died, another
		// controller): order once more without replaces, never in a loop.
		ctrl.LoggerFrom(ctx).Info("The CA says the certificate was replaced already; ordering without replaces", "replaces", request.Replaces)
		request.Replaces = ""
		order, err = run.acme.CreateOrder(ctx, request)
	}
	if err != nil {
		if acme.IsPermanent(err) {
			return ctrl.Result{}, r.recordFailure(ctx, run, true, "OrderRejected", "%v", err)
		}
		return ctrl.Result{}, err
	}
	run.order = order
	cert.Status.Order = &certpilotv1alpha1.OrderStatus{
		URL: order.URL, State: order.Status, DNSNames: slices.Clone(cert.Spec.DNSNames),
	}
	run.orderCreated = r.clock().Now()
	if value := strings.TrimSpace(cert.Annotations[certpilotv1alpha1.AnnotationRenew]); value != "" {
		cert.Status.RenewalRequest = value
	}
	ctrl.LoggerFrom(ctx).Info("Created ACME order", "order", order.URL, "replaces", request.Replaces)
	if run.trigger.Reason == renewal.ReasonIssuerServerChanged {
		// A valid certificate is replaced before its time: say why, once, with the order.
		r.Recorder.Eventf(cert, nil, corev1.EventTypeNormal, renewal.ReasonIssuerServerChanged, "Issue",
			"Reissuing: %s Ordered %s.", run.trigger.Message, order.URL)
	}
	run.orderUnrecorded = true
	r.unrecordedOrders.Store(client.ObjectKeyFromObject(cert), unrecordedOrder{uid: cert.UID, order: openOrderOf(run)})
	// Written at once: the moment between the order and its write is the one in which a
	// crash (or a lost leader) costs a second order.
	if err := r.recordOrder(ctx, run); err != nil {
		if _, ok := asStalled(err); ok {
			// The secretName was claimed by another Certificate since the cache was read: this
			// order is abandoned before anything was published.
			ctrl.LoggerFrom(ctx).Info("Abandoned the new order: the Secret name is claimed", "order", order.URL)
			cert.Status.Order, run.orderUnrecorded = run.patchBase.Status.Order.DeepCopy(), false
			cert.Status.RenewalRequest = run.patchBase.Status.RenewalRequest
			r.unrecordedOrders.Delete(client.ObjectKeyFromObject(cert))
		}
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// waitForOrder polls the order after the challenges were accepted: pending or processing
// requeue after the CA's Retry-After; invalid is a failure; ready and valid go on.
func (r *CertificateReconciler) waitForOrder(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	order, err := run.acme.GetOrder(ctx, run.order.URL)
	if err != nil {
		return ctrl.Result{}, err
	}
	run.order = order
	recordOrderState(run.cert.Status.Order, order.Status)
	switch order.Status {
	case acme.StatusReady, acme.StatusValid, acme.StatusProcessing:
		return ctrl.Result{}, nil
	case acme.StatusPending:
		// The CA's Retry-After when it sends one; else 1 s at first, then slower (a tenth of the
		// time spent waiting, at most a minute), so a slow CA is not polled every second.
		return ctrl.Result{}, wait(acme.PollInterval(order.ServerRetryAfter, orderAge(run)), reasonWaitingForValidation,
			"Waiting for the CA to validate %s", strings.Join(run.cert.Spec.DNSNames, ", "))
	default:
		return ctrl.Result{}, r.recordFailure(ctx, run, false, "OrderInvalid", "the CA marked order %s %s: %s", order.URL, order.Status, orderProblem(ctx, run, order))
	}
}

// recordFailure counts a failed issuance, tells the user (condition and Warning Event), removes
// the challenge responses and backs off: about 1m, 10m, 100m, then daily (sooner near or after
// expiry). A permanent failure
// (the CA refuses the request itself, not a validation) also sets Stalled: it needs a change of
// the spec, and is retried only at the backoff's pace.
func (r *CertificateReconciler) recordFailure(ctx context.Context, run *certificateRun, permanent bool, reason, format string, args ...any) error {
	message := fmt.Sprintf(format, args...)
	status := &run.cert.Status
	status.FailedIssuanceAttempts++
	run.failureRecorded = true
	issuances.WithLabelValues("failure", reason).Inc()
	status.LastFailureTime = &metav1.Time{Time: run.now}
	if status.Order != nil {
		status.Order.State = acme.StatusInvalid
	}
	r.Recorder.Eventf(run.cert, nil, corev1.EventTypeWarning, reason, "Issue", "Issuance failed: %s", message)
	ctrl.LoggerFrom(ctx).Info("Issuance failed", "reason", reason, "message", message, "attempts", status.FailedIssuanceAttempts)
	cleanupErr := r.removeChallenges(ctx, run)
	// The backoff, never so long that the served certificate expires while a retry could still
	// succeed, and hourly at most once it has (renewal.RetryTime; decide applies the same).
	backoff := retryTime(status, run.now, 0).Sub(run.now)
	summary := fmt.Sprintf(failureMessagePrefix+"%d, next in %s): %s", status.FailedIssuanceAttempts, backoff, message)
	if permanent {
		return errors.Join(&stalledError{Reason: reason, Message: summary, After: backoff}, cleanupErr)
	}
	return errors.Join(wait(backoff, reason, "%s", summary), cleanupErr)
}

// failureMessagePrefix starts the message of a failed issuance (recordFailure), which a
// reconcile during the backoff keeps.
const failureMessagePrefix = "Issuance failed (attempt "

// Reasons of the waits while the CA works on an order.
const (
	reasonWaitingForValidation  = "WaitingForValidation"
	reasonWaitingForCertificate = "WaitingForCertificate"
)

// progressWait is the longest wait on the CA whose progress is not written to the status on its
// own: the next reconcile, that soon, writes what it finds.
const progressWait = 5 * time.Second

// onlyProgress reports whether a reconcile ended waiting a few seconds for the CA to work on an
// order the last written status already records. Its status changes (challenge states, the
// order moving from pending to ready to processing) are progress the next reconcile re-derives
// from the CA and writes; not writing them saves a write per step of every issuance.
func onlyProgress(run *certificateRun, err error) bool {
	w, ok := asWait(err)
	if ok && (w.Reason == reasonGeneratingKey || w.Reason == reasonIssuerBusy) {
		return true // a moment before the order (or before the CA is asked): nothing to show yet
	}
	if !ok || w.After > progressWait || (w.Reason != reasonWaitingForValidation && w.Reason != reasonWaitingForCertificate) {
		return false
	}
	written, current := run.patchBase.Status.Order, run.cert.Status.Order
	if current == nil {
		return false
	}
	if run.claimOrder == current.URL {
		// The claim records it: the status is written at the end, or once it takes longer.
		return !run.orderCreated.IsZero() && run.now.Sub(run.orderCreated) < progressWindow
	}
	return written != nil && written.URL == current.URL && orderOpen(run.patchBase) &&
		meta.IsStatusConditionTrue(run.patchBase.Status.Conditions, certpilotv1alpha1.ConditionIssuing)
}

// orderAge is how long the open order has been issuing: from the Issuing condition as written,
// else from the order's creation (as the claim records it).
func orderAge(run *certificateRun) time.Duration {
	issuing := meta.FindStatusCondition(run.patchBase.Status.Conditions, certpilotv1alpha1.ConditionIssuing)
	if issuing != nil && issuing.Status == metav1.ConditionTrue {
		return run.now.Sub(issuing.LastTransitionTime.Time)
	}
	if !run.orderCreated.IsZero() {
		return max(run.now.Sub(run.orderCreated), 0)
	}
	return 0
}

// slowedDown turns the CA asking to slow down (429 or 503, rateLimited, serverInternal) into a
// wait of what it asked for: a failed attempt, counted and announced, retried at
// renewal.RetryTime (the backoff, at least the CA's Retry-After, never so late that the served
// certificate expires first); an open order is kept and resumed. Other errors are returned as
// they are.
func (r *CertificateReconciler) slowedDown(ctx context.Context, run *certificateRun, err error) error {
	retryAfter, slowDown := acme.RetryAfterOf(err)
	if !slowDown {
		return err
	}
	status := &run.cert.Status
	status.FailedIssuanceAttempts++
	status.LastFailureTime = &metav1.Time{Time: run.now}
	// Counted from now, when the answer came, not from the reconcile's start (run.now): the
	// refused request may have come seconds into the reconcile. Whole seconds (the status's
	// precision), rounded up: never earlier than the CA asked.
	next := retryTime(status, r.clock().Now(), retryAfter)
	if rounded := next.Truncate(time.Second); rounded.Before(next) {
		next = rounded.Add(time.Second)
	}
	// Recorded, so that no reconcile before then (woken by a Secret or spec change, or a
	// manager restart) sends anything to the CA, not even to resume the open order.
	status.NextAttemptTime = &metav1.Time{Time: next}
	run.failureRecorded = true
	issuances.WithLabelValues("failure", "CASlowDown").Inc()
	r.Recorder.Eventf(run.cert, nil, corev1.EventTypeWarning, "CASlowDown", "Issue",
		"The CA asked to slow down (attempt %d); next attempt at %s: %v", status.FailedIssuanceAttempts, next.UTC().Format(time.RFC3339), err)
	return wait(next.Sub(r.clock().Now()), "CASlowDown", "The CA asked to slow down (attempt %d, Retry-After %s); next attempt at %s: %v",
		status.FailedIssuanceAttempts, retryAfter, next.UTC().Format(time.RFC3339), err)
}

// reregisterIfForgotten handles a CA that no longer knows the issuer's account (it was reset,
// like a restarted Pebble): the key is registered again, the open order (the old account's) is
// dropped, and the Certificate starts over at once with one fresh order. Never a permanent
// stall: the same request would work with the new account.
func (r *CertificateReconciler) reregisterIfForgotten(ctx context.Context, run *certificateRun, err error) error {
	if err == nil || !acme.IsAccountGone(err) || run.issuer == nil {
		return err
	}
	client, clientErr := r.acmeClient(ctx, run)
	if clientErr != nil {
		return err
	}
	old := client.AccountURI()
	uri, registerErr := r.Accounts.Reregister(ctx, run.issuer, client)
	if registerErr != nil {
		return fmt.Errorf("the CA no longer knows ACME account %s, and registering again failed: %w", old, registerErr)
	}
	ctrl.LoggerFrom(ctx).Info("Registered the ACME account again: the CA no longer knew it", "oldAccount", old, "account", uri)
	r.Recorder.Eventf(run.cert, nil, corev1.EventTypeWarning, "AccountReregistered", "Issue",
		"The CA no longer knew ACME account %s (was it reset?); registered again as %s and starting a new order", old, uri)
	if orderOpen(run.cert) {
		if err := r.abandonOrder(ctx, run); err != nil { // the old account's order is gone with it
			ctrl.LoggerFrom(ctx).Error(err, "Forgetting the old account's order failed")
		}
	}
	return wait(time.Second, "AccountReregistered", "The CA no longer knew ACME account %s; registered again as %s", old, uri)
}

// recordOrderState records the CA's state of the order in the status, except valid: the order
// stays open, recorded as processing, until its certificate is stored in the Secret
// (recordIssued). A transient error between the CA's valid and the stored Secret (a bad nonce
// while downloading, a crash) then resumes the same order and downloads its certificate,
// instead of ordering a second certificate for the same names.
func recordOrderState(order *certpilotv1alpha1.OrderStatus, caState string) {
	if caState == acme.StatusValid {
		caState = acme.StatusProcessing
	}
	order.State = caState
}

// sameNames compares DNS name lists as sets: an order for the same names in another order is
// the same order.
func sameNames(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// orderProblem describes why an order failed, naming the names: its authorizations' errors, or
// the order's own problem.
func orderProblem(ctx context.Context, run *certificateRun, order *acme.Order) string {
	var problems []string
	for _, url := range order.AuthzURLs {
		authz, err := run.acme.GetAuthorization(ctx, url)
		if err != nil {
			continue
		}
		for _, challenge := range authz.Challenges {
			if challenge.Error != nil {
				problems = append(problems, fmt.Sprintf("%s %s: %v", authz.Identifier, challenge.Type, challenge.Error))
			}
		}
	}
	if len(problems) == 0 {
		if order.Error != nil {
			return fmt.Sprintf("%s: %v", strings.Join(order.Identifiers, ", "), order.Error)
		}
		return "no reason given"
	}
	return strings.Join(problems, "; ")
}
