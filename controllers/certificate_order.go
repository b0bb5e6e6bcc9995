package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/clock"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/renewal"
)

// orderSteps creates or resumes the ACME order, polls it while the CA validates, and finalizes
// it with the next private key.
type orderSteps struct {
	accounts   *Accounts
	recorder   recorder.EventRecorder
	clock      clock.PassiveClock
	keys       *keyMaker
	claims     claimStore
	records    orderRecords
	challenges *challengeSteps
	failures   failureReporter
	// budget takes each new order from its namespace's budget with the account.
	budget orderBudget
}

// ensureOrder resumes the open order (recorded in the status or the claim, restoreOrder), or
// creates one and writes it to the claim (recordOrder) before any challenge is touched, so a
// controller killed at any point after that resumes it.
func (o *orderSteps) ensureOrder(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	cert := run.cert
	if recorded := cert.Status.Order; orderOpen(cert) && sameNames(recorded.Identifiers(), cert.Spec.Identifiers()) {
		order, err := run.acme.GetOrder(ctx, recorded.URL)
		switch {
		case err == nil && order.Status != acme.StatusInvalid:
			run.order = order
			recordOrderState(recorded, order.Status)
			return ctrl.Result{}, nil
		case err == nil:
			return ctrl.Result{}, o.failures.recordFailure(ctx, run, false, "OrderInvalid", "the CA marked order %s invalid: %s", order.URL, orderProblem(ctx, run, order))
		case !acme.IsPermanent(err):
			return ctrl.Result{}, err
		}
		// The CA forgot the order (expired, deleted): start a new one.
		ctrl.LoggerFrom(ctx).Info("Abandoned an order the CA no longer knows", "order", recorded.URL, "error", err.Error())
	}
	if orderOpen(cert) {
		// The names changed while an order was open: its challenges are no longer wanted.
		if err := o.challenges.removeChallenges(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	}

	// A secretName claimed by something else (another Certificate, a Secret squatting on the
	// claim's name) stops this one before it orders, renewals included.
	if err := o.claims.checkClaimable(ctx, run); err != nil {
		return ctrl.Result{}, err
	}
	if claim := o.claims.cached(ctx, run); claim == nil || claim.Annotations[annotationKeyRevision] != nextKeyRevision(cert) {
		// The key the write that records the order stores. A key that takes long (RSA, in a
		// burst) is made in the background: the worker goes on with other Certificates, and
		// this one is woken when its key is ready.
		keyPEM, ready, err := o.keys.take(cert, nextKeyRevision(cert))
		if err != nil {
			return ctrl.Result{}, err
		}
		if !ready {
			return ctrl.Result{}, wait(keyWakeFallback, reasonGeneratingKey, "Generating the private key")
		}
		run.nextKey = keyPEM
	}
	if !acme.RoomForRequest(ctx, time.Now()) { // a deadline is wall-clock time, whatever the run's clock
		// Earlier requests of this reconcile were slow: a new order cut by its deadline after
		// the CA made it would be an order nobody records. Order in a reconcile of its own.
		return ctrl.Result{}, wait(time.Second, reasonIssuerBusy, "The CA answered slowly; ordering again shortly")
	}
	if err := o.budget.take(ctx, run); err != nil {
		return ctrl.Result{}, err
	}
	request := acme.OrderRequest{Identifiers: cert.Spec.Identifiers(), Profile: run.issuer.GetSpec().ACME.Profile, Replaces: replacesFor(run)}
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
			return ctrl.Result{}, o.failures.recordFailure(ctx, run, true, "OrderRejected", "%v", err)
		}
		return ctrl.Result{}, err
	}
	run.order = order
	cert.Status.Order = &certpilotv1alpha1.OrderStatus{
		URL: order.URL, State: order.Status, DNSNames: slices.Clone(cert.Spec.DNSNames), IPAddresses: slices.Clone(cert.Spec.IPAddresses),
	}
	run.orderCreated = o.clock.Now()
	if value := strings.TrimSpace(cert.Annotations[certpilotv1alpha1.AnnotationRenew]); value != "" {
		cert.Status.RenewalRequest = value
	}
	ctrl.LoggerFrom(ctx).Info("Created ACME order", "order", order.URL, "replaces", request.Replaces)
	if run.trigger.Reason == renewal.ReasonIssuerServerChanged {
		// A valid certificate is replaced before its time: say why, once, with the order.
		o.recorder.Eventf(cert, nil, corev1.EventTypeNormal, renewal.ReasonIssuerServerChanged, "Issue",
			"Reissuing: %s Ordered %s.", run.trigger.Message, order.URL)
	}
	run.orderUnrecorded = true
	o.records.unrecorded.Store(client.ObjectKeyFromObject(cert), unrecordedOrder{uid: cert.UID, order: openOrderOf(run)})
	run.authorizations = fetchAuthorizations(ctx, run.acme, order.AuthzURLs)
	// Written at once: the moment between the order and its write is the one in which a
	// crash (or a lost leader) costs a second order.
	if err := o.records.recordOrder(ctx, run); err != nil {
		if _, ok := asStalled(err); ok {
			// The secretName was claimed by another Certificate since the cache was read: this
			// order is abandoned before anything was published.
			ctrl.LoggerFrom(ctx).Info("Abandoned the new order: the Secret name is claimed", "order", order.URL)
			cert.Status.Order, run.orderUnrecorded = run.patchBase.Status.Order.DeepCopy(), false
			cert.Status.RenewalRequest = run.patchBase.Status.RenewalRequest
			o.records.unrecorded.Delete(client.ObjectKeyFromObject(cert))
		}
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// authorizationFetch holds a new order's authorizations, fetched from the CA while the order
// is written into the claim: the two do not depend on each other, so the challenges step finds
// them fetched instead of asking the CA after the write.
type authorizationFetch struct {
	done    chan struct{}
	results map[string]authorizationResult // written before done is closed
}

type authorizationResult struct {
	authz *acme.Authorization
	err   error
}

// fetchAuthorizations starts fetching the authorizations at urls, in order, until one fails;
// ctx (the reconcile's) bounds it.
func fetchAuthorizations(ctx context.Context, client *acme.Client, urls []string) *authorizationFetch {
	f := &authorizationFetch{done: make(chan struct{}), results: make(map[string]authorizationResult, len(urls))}
	go func() {
		defer close(f.done)
		for _, url := range urls {
			authz, err := client.GetAuthorization(ctx, url)
			f.results[url] = authorizationResult{authz: authz, err: err}
			if err != nil {
				return
			}
		}
	}()
	return f
}

// authorization returns the authorization at url: as the fetch got it (its error included),
// else from the CA now (no fetch, or one that stopped before url).
func (f *authorizationFetch) authorization(ctx context.Context, client *acme.Client, url string) (*acme.Authorization, error) {
	if f != nil {
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if result, ok := f.results[url]; ok {
			return result.authz, result.err
		}
	}
	return client.GetAuthorization(ctx, url)
}

// waitForOrder polls the order after the challenges were accepted: pending or processing
// requeue after the CA's Retry-After; invalid is a failure; ready and valid go on.
func (o *orderSteps) waitForOrder(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	if len(run.accept) > 0 {
		// Accepted in this reconcile: the CA is validating now, and is often done in moments.
		if err := awaitInline(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	} else {
		order, err := run.acme.GetOrder(ctx, run.order.URL)
		if err != nil {
			return ctrl.Result{}, err
		}
		run.order = order
		recordOrderState(run.cert.Status.Order, order.Status)
	}
	order := run.order
	switch order.Status {
	case acme.StatusReady, acme.StatusValid, acme.StatusProcessing:
		return ctrl.Result{}, nil
	case acme.StatusPending:
		// The CA's Retry-After when it sends one; else 1 s at first, then slower (a tenth of the
		// time spent waiting, at most a minute), so a slow CA is not polled every second.
		return ctrl.Result{}, wait(acme.PollInterval(order.ServerRetryAfter, orderAge(run)), reasonWaitingForValidation,
			"Waiting for the CA to validate %s", strings.Join(run.cert.Spec.Identifiers(), ", "))
	default:
		return ctrl.Result{}, o.failures.recordFailure(ctx, run, false, "OrderInvalid", "the CA marked order %s %s: %s", order.URL, order.Status, orderProblem(ctx, run, order))
	}
}

// awaitInline looks at the run's order again while it stays in the state it was last seen in
// (pending after the challenges were accepted, processing after finalization), acme.InlinePolls
// apart, so a CA that validates or issues in moments is seen in this reconcile. Each look is
// recorded (run.order, the status's order state); an order still in that state is left to the
// requeue.
func awaitInline(ctx context.Context, run *certificateRun) error {
	seen := run.order.Status
	for i := 0; run.order.Status == seen; i++ {
		wait, ok := acme.InlineWait(i, run.order.ServerRetryAfter)
		if !ok {
			return nil
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		order, err := run.acme.GetOrder(ctx, run.order.URL)
		if err != nil {
			return err
		}
		run.order = order
		recordOrderState(run.cert.Status.Order, order.Status)
	}
	return nil
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

// reregisterIfForgotten handles a CA that no longer knows the issuer's account (it was reset,
// like a restarted Pebble): the key is registered again, the open order (the old account's) is
// dropped, and the Certificate starts over at once with one fresh order. Never a permanent
// stall: the same request would work with the new account.
func (o *orderSteps) reregisterIfForgotten(ctx context.Context, run *certificateRun, err error) error {
	if err == nil || !acme.IsAccountGone(err) || run.issuer == nil {
		return err
	}
	client, clientErr := issuerClient(ctx, o.accounts, run)
	if clientErr != nil {
		return err
	}
	old := client.AccountURI()
	uri, registerErr := o.accounts.Reregister(ctx, run.issuer, client)
	if registerErr != nil {
		return fmt.Errorf("the CA no longer knows ACME account %s, and registering again failed: %w", old, registerErr)
	}
	ctrl.LoggerFrom(ctx).Info("Registered the ACME account again: the CA no longer knew it", "oldAccount", old, "account", uri)
	o.recorder.Eventf(run.cert, nil, corev1.EventTypeWarning, "AccountReregistered", "Issue",
		"The CA no longer knew ACME account %s (was it reset?); registered again as %s and starting a new order", old, uri)
	if orderOpen(run.cert) {
		if err := o.records.abandonOrder(ctx, run); err != nil { // the old account's order is gone with it
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

// sameNames compares name lists (DNS names and IP addresses) as sets: an order for the same names in another order is
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

// finalize sends the CSR, signed with a fresh private key, once every authorization is valid.
func (o *orderSteps) finalize(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	if err := o.records.recordOrder(ctx, run); err != nil {
		return ctrl.Result{}, err
	}
	if run.order.Status == acme.StatusReady {
		key, err := o.claims.nextPrivateKey(ctx, run)
		if err != nil {
			return ctrl.Result{}, err
		}
		csr, err := pki.CreateCSR(key, run.cert.Spec.Identifiers())
		if err != nil {
			return ctrl.Result{}, err
		}
		order, err := run.acme.Finalize(ctx, run.order, csr)
		if err != nil {
			if acme.IsPermanent(err) {
				return ctrl.Result{}, o.failures.recordFailure(ctx, run, true, "FinalizeFailed", "%v", err)
			}
			return ctrl.Result{}, err
		}
		run.order = order
		recordOrderState(run.cert.Status.Order, order.Status)
		if order.Status == acme.StatusProcessing {
			// Most CAs issue within moments of finalization: a look or two now saves a
			// requeue, and often the status write that goes with it. A look the CA refuses
			// (a rateLimited answer with its Retry-After) ends the reconcile with that error,
			// so the CA's slow-down is honoured; the order stays recorded as processing.
			if err := awaitInline(ctx, run); err != nil {
				return ctrl.Result{}, err
			}
		}
		ctrl.LoggerFrom(ctx).Info("Finalized order", "order", run.order.URL, "state", run.order.Status)
	}
	switch run.order.Status {
	case acme.StatusValid:
		return ctrl.Result{}, nil
	case acme.StatusProcessing:
		return ctrl.Result{}, wait(acme.PollInterval(run.order.ServerRetryAfter, orderAge(run)), reasonWaitingForCertificate, "The CA is issuing the certificate")
	default:
		return ctrl.Result{}, o.failures.recordFailure(ctx, run, false, "OrderInvalid", "the CA marked order %s %s after finalization: %s",
			run.order.URL, run.order.Status, orderProblem(ctx, run, run.order))
	}
}
