package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/budget"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/renewal"
	"github.com/certpilot/certpilot/internal/solver"
)

// FieldManager is certpilot's server-side apply field manager.
const FieldManager = kube.FieldManager

// secretNameIndex indexes Certificates by spec.secretName, so that a certificate Secret that is
// deleted wakes the Certificates that wait for its name.
const secretNameIndex = "spec.secretName"

// issuerRefIndex indexes Certificates by "<kind>/<name>" of their issuers (spec.issuerRef and
// spec.fallbackIssuerRefs), so an issuer that becomes Ready wakes exactly its certificates.
const issuerRefIndex = "spec.issuerRef"

// CertificateReconciler obtains a Certificate's certificate from its ACME issuer, keeps it in
// the Secret and renews it. A reconcile observes once (observe), decides in a pure function
// (decideIssuance), then runs the steps the decision leaves, each in its own file; what an
// issuance in progress needs after a crash (the open order and its key) lives in the claim
// Secret, so a controller killed at any point resumes the same order (docs/design.md).
type CertificateReconciler struct {
	client.Client
	// APIReader reads objects certpilot does not cache: a Secret it does not own (to refuse to
	// overwrite it) and load balancer Deployments.
	APIReader client.Reader
	// SecretNames answers, without a request, whether a Secret the cache leaves out exists
	// (nil: the API is asked).
	SecretNames *kube.SecretNames
	Accounts    *Accounts
	Recorder    recorder.EventRecorder
	// Clock is injected so tests can control time; nil means the real clock.
	Clock clock.PassiveClock
	// Solvers are what the challenge solvers share (shard writer, mounts, self-check timeout).
	Solvers *solver.Deps
	// Activity, when set, counts the reconciles in progress (the Event writer holds Events
	// while there are any).
	Activity *kube.Activity

	// written holds, per Certificate, the resourceVersion of this controller's last write.
	written writeWatermarks
	// secretWrites holds the certificate Secrets this controller created whose watch events
	// have not come back yet (ownWrites).
	secretWrites ownWrites
	// announced holds, per Certificate, the certificate last announced (announcements).
	announced announcements
	// unrecordedOrders holds, per Certificate, an order created that the status does not record
	// yet (restoreOrder).
	unrecordedOrders sync.Map
	// renewalInfoFetches holds, per Certificate, the next fetch of its renewal window when no
	// status write recorded it (refreshRenewalInfo).
	renewalInfoFetches renewalInfoFetches
	// keys makes the private keys of new orders without holding a worker (keyMaker).
	keys keyMaker
	// IssuerGate bounds how many reconciles talk to one issuer's CA at once, so that one slow
	// or hostile CA cannot hold every worker (nil: no bound).
	IssuerGate *acme.Gate
	// Orders holds each namespace's new-order budget per ACME account and the accounts' pauses
	// after rate limits (nil: neither).
	Orders *budget.Ledger

	partsOnce sync.Once
	steps     *certificateParts
}

// certificateParts are the steps and stores of the certificate flow, grouped by concern, each
// holding only the clients and state it uses. Reconcile and decide (this file, decide.go,
// observe.go, issuer.go) run them in order.
type certificateParts struct {
	// records keeps the open order durable (certificate_orderrecord.go).
	records orderRecords
	// orders creates, polls and finalizes the order (certificate_order.go).
	orders *orderSteps
	// challenges publishes, self-checks, accepts and removes the challenge responses
	// (certificate_challenges.go, with the solvers of certificate_solvers.go).
	challenges *challengeSteps
	// store reads and writes the certificate Secret (certificate_store.go).
	store *secretStore
	// claims reads and writes the claim Secret and the next private key (certificate_claim.go).
	claims claimStore
	// renewalInfo fetches the CA's renewal window (certificate_renewalinfo.go).
	renewalInfo renewalInfoSteps
	// failures records failed issuances and the CA's slow-downs (certificate_failures.go).
	failures failureReporter
	// fallback moves an issuance to the next issuer (certificate_fallback.go).
	fallback issuerFallback
}

// parts builds the reconciler's parts from its fields on first use.
func (r *CertificateReconciler) parts() *certificateParts {
	r.partsOnce.Do(func() {
		claims := claimStore{client: r.Client, apiReader: r.APIReader, names: r.SecretNames}
		orders := orderBudget{ledger: r.Orders, clock: r.clock(), client: r.Client}
		failures := failureReporter{recorder: r.Recorder, clock: r.clock(), orders: orders}
		records := orderRecords{claims: claims, unrecorded: &r.unrecordedOrders}
		renewalInfo := renewalInfoSteps{accounts: r.Accounts, fetches: &r.renewalInfoFetches}
		challenges := &challengeSteps{client: r.Client, accounts: r.Accounts, solvers: r.Solvers, records: records, failures: failures}
		r.steps = &certificateParts{
			records:     records,
			claims:      claims,
			failures:    failures,
			renewalInfo: renewalInfo,
			challenges:  challenges,
			fallback:    issuerFallback{records: records, challenges: challenges, recorder: r.Recorder},
			orders: &orderSteps{accounts: r.Accounts, recorder: r.Recorder, clock: r.clock(), keys: &r.keys,
				claims: claims, records: records, challenges: challenges, failures: failures, budget: orders},
			store: &secretStore{client: r.Client, apiReader: r.APIReader, names: r.SecretNames, recorder: r.Recorder,
				claims: claims, challenges: challenges, renewalInfo: renewalInfo, failures: failures, written: &r.secretWrites, announced: &r.announced},
		}
	})
	return r.steps
}

// certificateRun is what the steps of one reconcile share: what observe read, what the steps
// learned from the CA, and the status being built (written once, by the deferred summary).
type certificateRun struct {
	cert   *certpilotv1alpha1.Certificate
	now    time.Time
	issuer certpilotv1alpha1.GenericIssuer
	acme   *acme.Client
	// observed is what the observe step read: the certificate Secret, its leaf, the issuer.
	observed observed
	// ready is the Ready condition the decision computed from the Secret (nil before it ran).
	ready *metav1.Condition
	// trigger is why the decision issues (zero when it does not).
	trigger renewal.Trigger
	// order is the order as the server last reported it in this reconcile.
	order *acme.Order
	// secretNamespace holds the Secrets the issuer names (its account key, its solver's TSIG key).
	secretNamespace string
	// solvers are the solver implementations built in this reconcile, by spec.
	solvers map[*certpilotv1alpha1.Solver]solver.Solver
	// failureRecorded is set when recordFailure or slowedDown already told the user (one Warning
	// is enough).
	failureRecorded bool
	// issuanceFailed is set by recordFailure: the step runner removes the challenge responses.
	issuanceFailed bool
	// removeAfterStatus is set when the certificate is stored: its challenge responses are
	// removed after the status write that records it, so Ready waits for no cleanup.
	removeAfterStatus bool
	// orderUnrecorded is set when this reconcile created (or resumed from memory) an order that
	// recordOrder has not written to the claim yet.
	orderUnrecorded bool
	// claimOrder is the URL of the order the claim Secret is known to record.
	claimOrder string
	// orderCreated is when the open order was created, when the status does not record it.
	orderCreated time.Time
	// nextKey is the private key (PEM) made for the claim write that records a new order.
	nextKey []byte
	// authorizations are a new order's authorizations, fetched while the order is recorded
	// (nil for an order this reconcile did not create).
	authorizations *authorizationFetch
	// accept are the challenges whose responses passed the self-check.
	accept []pendingChallenge
	// releaseIssuer gives back this reconcile's slot of its issuer's gate (nil: none held).
	releaseIssuer func()
	// patchBase is the Certificate as last written, for the status patches steps make early.
	patchBase *certpilotv1alpha1.Certificate
}

// certificateStep is one idempotent step. A non-zero Result or an error ends the reconcile.
type certificateStep func(ctx context.Context, run *certificateRun) (ctrl.Result, error)

// Reconcile runs the certificate flow: resolve the issuer, decide, order, present and check the
// challenges, accept, finalize, store, clean up, schedule the renewal.
func (r *CertificateReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, err error) {
	if r.Activity != nil {
		r.Activity.Begin()
		defer r.Activity.End()
	}
	cert := &certpilotv1alpha1.Certificate{}
	if err := r.Get(ctx, req.NamespacedName, cert); err != nil {
		if apierrors.IsNotFound(err) {
			solver.ForgetMetrics(req.Namespace, req.Name)
			r.written.forget(req.NamespacedName)
			r.unrecordedOrders.Delete(req.NamespacedName)
			r.renewalInfoFetches.forget(req.NamespacedName)
			r.keys.forget(req.NamespacedName)
			r.announced.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.written.stale(cert) {
		// The cache has not caught up with this controller's own last write: steps run on what
		// was last written, never on an older copy (which would redo finished work).
		requeues.WithLabelValues("CacheBehind").Inc()
		return ctrl.Result{RequeueAfter: staleReadRetry}, nil
	}
	run := &certificateRun{cert: cert, now: r.clock().Now(), patchBase: cert.DeepCopy()}
	if !cert.DeletionTimestamp.IsZero() {
		return r.finalizeDeletion(ctx, run)
	}

	// The steps' requests to the CA (and the apiserver) share one deadline, so a CA that answers
	// slowly cannot hold a worker for long; the summary's status write below has its own.
	stepsCtx, cancel := acme.WithReconcileDeadline(ctx)
	defer cancel()
	p := r.parts()
	defer func() {
		if run.releaseIssuer != nil {
			run.releaseIssuer()
		}
		err = p.orders.reregisterIfForgotten(ctx, run, err)
		failure := classifyIssuerFailure(run, err)
		err = p.fallback.afterAttempt(ctx, run, failure, p.failures.slowedDown(ctx, run, err))
		wasStalled := meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled)
		summarizeCertificate(cert, run.ready, err, run.now)
		if s, ok := asStalled(err); ok && !wasStalled && !run.failureRecorded {
			// Once per stall, not on every recheck.
			r.Recorder.Eventf(cert, nil, corev1.EventTypeWarning, s.Reason, "Reconcile", "%s", s.Message)
		}
		// Judged on the step's error: mergeOutcome turns a wait into a plain requeue.
		progressOnly := onlyProgress(run, err)
		countRequeue(err)
		result, err = mergeOutcome(ctx, result, err)
		if orderOpen(cert) {
			// An issuance under way goes before Certificates that have not started one:
			// finishing it frees its challenge responses (entries every write of their shard
			// carries) and its order at the CA, so a burst keeps few of them in flight.
			result.Priority = ptr.To(priorityIssuing)
		}
		var patchErr error
		if !progressOnly {
			patchErr = r.patchStatus(ctx, run)
		}
		if run.removeAfterStatus {
			// Whether or not the status write landed: the certificate is stored. A failed
			// cleanup's mark in the status (for finishCleanup) is written at once; a cleanup
			// that changes nothing in the status writes nothing.
			if cleanupErr := p.challenges.removeChallenges(ctx, run); cleanupErr != nil && err == nil {
				err = cleanupErr
			}
			if patchErr == nil {
				patchErr = r.patchStatus(ctx, run)
			}
		}
		switch {
		case errors.Is(patchErr, errStatusConflict):
			ctrl.LoggerFrom(ctx).V(1).Info("The Certificate changed since it was read; its status is written again shortly")
			if err == nil {
				requeues.WithLabelValues("StatusConflict").Inc()
				result = ctrl.Result{RequeueAfter: staleReadRetry, Priority: result.Priority}
			}
		case patchErr != nil && err == nil:
			err = patchErr
		}
		r.written.remember(cert)
		if patchErr == nil {
			r.announced.forget(req.NamespacedName) // the status holds what was announced
		}
	}()

	for _, step := range []certificateStep{
		p.records.restoreOrder,
		r.decide,
		r.resolveIssuer,
		p.orders.ensureOrder,
		p.challenges.presentChallenges,
		p.challenges.acceptChallenges,
		p.orders.waitForOrder,
		p.orders.finalize,
		p.store.storeCertificate,
	} {
		result, err := step(stepsCtx, run)
		if run.issuanceFailed {
			// A failed issuance (recordFailure) takes its challenge responses down.
			if cleanupErr := p.challenges.removeChallenges(stepsCtx, run); cleanupErr != nil {
				err = errors.Join(err, cleanupErr)
			}
		}
		if err != nil || !result.IsZero() {
			return result, err
		}
	}
	return ctrl.Result{}, nil
}

// finalizeDeletion undoes what owner references cannot: the challenge responses in shared
// Secrets (the Secrets themselves are garbage-collected; the injection controller undoes what
// it wrote into workloads).
func (r *CertificateReconciler) finalizeDeletion(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	_, _ = r.parts().records.restoreOrder(ctx, run)
	r.observeIssuer(ctx, run)
	if orderOpen(run.cert) {
		// The CA lists the order's challenges, with the tokens that name their responses.
		if client, err := issuerClient(ctx, r.Accounts, run); err == nil {
			if order, err := client.GetOrder(ctx, run.cert.Status.Order.URL); err == nil {
				run.acme, run.order = client, order
			}
		}
	}
	if err := r.parts().challenges.removeChallenges(ctx, run); err != nil {
		// Do not hold the deletion hostage to an unreachable DNS server or a deleted load
		// balancer: the responses are useless once the order is gone.
		ctrl.LoggerFrom(ctx).Error(err, "Removing challenge responses failed; deleting anyway")
	}
	if err := kube.SetFinalizer(ctx, r.Client, run.cert, challengeFinalizer, false); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.patchStatus(ctx, run)
}

// priorityIssuing is the work queue priority of a Certificate whose order is open (new ones
// have 0).
const priorityIssuing = 10

// staleReadRetry is how soon a Certificate read from a cache that lags behind is looked at again.
const staleReadRetry = 200 * time.Millisecond

// writeWatermarks holds, per Certificate, the resourceVersion of this controller's last write,
// so that a reconcile can tell a cache that lags behind it. Its zero value is ready to use.
type writeWatermarks struct{ versions sync.Map }

// stale reports whether cert, as read from the cache, is older than this controller's last
// write of it. resourceVersions are opaque, but the apiserver's (etcd revisions) are integers
// that grow; anything else is taken as current.
func (w *writeWatermarks) stale(cert *certpilotv1alpha1.Certificate) bool {
	last, ok := w.versions.Load(client.ObjectKeyFromObject(cert))
	if !ok {
		return false
	}
	cached, err := strconv.ParseUint(cert.ResourceVersion, 10, 64)
	return err == nil && cached < last.(uint64)
}

// remember records cert's resourceVersion after this reconcile's writes.
func (w *writeWatermarks) remember(cert *certpilotv1alpha1.Certificate) {
	if version, err := strconv.ParseUint(cert.ResourceVersion, 10, 64); err == nil {
		w.versions.Store(client.ObjectKeyFromObject(cert), version)
	}
}

// forget drops what is remembered of a Certificate that is gone.
func (w *writeWatermarks) forget(key types.NamespacedName) { w.versions.Delete(key) }

func (r *CertificateReconciler) clock() clock.PassiveClock {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}

// patchStatus writes the status when it changed since the last write: an idle cluster writes
// nothing. The write carries an optimistic lock (the resourceVersion this reconcile last knew,
// its own finalizer patch included): a merge patch replaces the whole conditions list, so
// without it a condition another writer added since the cache was read (the injection
// controller's Injected, another controller's own type) would be dropped. A conflict is
// errStatusConflict: the reconcile looks again shortly, from the newer version.
func (r *CertificateReconciler) patchStatus(ctx context.Context, run *certificateRun) error {
	if equality.Semantic.DeepEqual(run.patchBase.Status, run.cert.Status) {
		return nil
	}
	base := run.patchBase.DeepCopy()
	base.ResourceVersion = run.cert.ResourceVersion
	if err := r.Status().Patch(ctx, run.cert, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		if apierrors.IsConflict(err) {
			return errStatusConflict
		}
		return fmt.Errorf("writing the status of Certificate %s/%s: %w", run.cert.Namespace, run.cert.Name, err)
	}
	run.patchBase = run.cert.DeepCopy()
	return nil
}

// errStatusConflict is a status write refused because the Certificate changed since it was
// read: not a failure, the next reconcile writes from the newer version.
var errStatusConflict = errors.New("the Certificate changed since it was read")

// mergeOutcome combines a step's result with the classified error.
func mergeOutcome(ctx context.Context, result ctrl.Result, err error) (ctrl.Result, error) {
	if err == nil {
		return result, nil
	}
	return resultOf(ctx, err)
}

// notClaimSecret filters out a Certificate's claim of its secretName: only this controller
// writes it, before ordering and during finalization, and nothing waits for it to change, so
// its writes would only wake the Certificate for a reconcile with nothing to do (one per
// issuance), or one that rewrites a failure's message with the backoff's.
func notClaimSecret(obj client.Object) bool {
	_, claim := obj.GetAnnotations()[annotationClaimOf]
	return !claim
}

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
