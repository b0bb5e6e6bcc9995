package controllers

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/budget"
)

// orderBudget applies the shared ACME account's limits to a reconcile (budget.Ledger): each
// namespace's new-order budget per account, and the account's pause after a rate limit.
type orderBudget struct {
	// ledger is nil when there is neither.
	ledger *budget.Ledger
	clock  clock.PassiveClock
	// client records the account's pause in the issuer's status (nil: it is kept in memory only).
	client client.Client
}

// accountOf names the ACME account a reconcile orders with: its URL at the CA, which every
// issuer registered with the same key and CA shares, as the issuer's status records it (the
// client learns it only with its first signed request); the issuer when the URL is not known.
func accountOf(run *certificateRun) string {
	if run.issuer != nil {
		if uri := run.issuer.GetStatus().AccountURI; uri != "" {
			return uri
		}
	}
	if run.acme != nil {
		if uri := run.acme.AccountURI(); uri != "" {
			return uri
		}
	}
	ref := run.cert.Spec.IssuerRef
	if ref.Kind == "ClusterIssuer" {
		return "ClusterIssuer/" + ref.Name
	}
	return "Issuer/" + run.cert.Namespace + "/" + ref.Name
}

// take takes a new order from the namespace's budget with the account: refused while the
// account pauses after a rate limit (a wait, AccountPaused), or when the namespace spent its
// budget (Stalled, Throttled, until the next order is allowed). A refusal for the account's
// pause records it in this issuer's status too (once per issuer and pause): another issuer
// registered on the same account then keeps the pause across a restart as well.
func (b orderBudget) take(ctx context.Context, run *certificateRun) error {
	if b.ledger == nil {
		return nil
	}
	now := b.clock.Now()
	if run.issuer != nil {
		if recorded := run.issuer.GetStatus().OrdersPausedUntil; recorded != nil && now.Before(recorded.Time) {
			// A pause from before a restart, or from the replica that led before.
			b.ledger.PauseAccount(accountOf(run), recorded.Time)
		}
	}
	verdict := b.ledger.TakeOrder(accountOf(run), run.cert.Namespace, now)
	if verdict.Allowed {
		return nil
	}
	ordersRefused.WithLabelValues(verdict.Reason).Inc()
	message := verdict.Message(run.cert.Namespace, b.ledger.Limit)
	after := max(verdict.RetryAt.Sub(now), time.Second)
	if verdict.Reason == budget.ReasonThrottled {
		return &stalledError{Reason: verdict.Reason, Message: message, After: after}
	}
	if until := b.ledger.AccountPausedUntil(accountOf(run)); now.Before(until) {
		b.recordPause(ctx, run, until, now)
	}
	return wait(after, verdict.Reason, "%s", message)
}

// rateLimited pauses the account's new orders after the CA's rate limit (err): the namespace's
// for the whole Retry-After, the other namespaces' for at most budget.MaxAccountPause.
func (b orderBudget) rateLimited(ctx context.Context, run *certificateRun, err error, retryAfter time.Duration) {
	if b.ledger == nil || !acme.IsRateLimited(err) {
		return
	}
	now := b.clock.Now()
	until, accountUntil := b.ledger.RateLimited(accountOf(run), run.cert.Namespace, retryAfter, now)
	ctrl.LoggerFrom(ctx).Info("Paused new orders with the ACME account: the CA answered rateLimited",
		"account", accountOf(run), "namespacePausedUntil", until.UTC().Format(time.RFC3339),
		"accountPausedUntil", accountUntil.UTC().Format(time.RFC3339))
	b.recordPause(ctx, run, accountUntil, now)
}

// recordPause writes the account's pause into the issuer's status (status.ordersPausedUntil),
// where take finds it after a restart: once per pause (budget.Ledger.ToRecord), not per
// Certificate. A failed write leaves the pause in memory only, and is logged.
func (b orderBudget) recordPause(ctx context.Context, run *certificateRun, until, now time.Time) {
	if b.client == nil || run.issuer == nil {
		return
	}
	// Whole seconds, the status's precision, rounded up: the recorded pause never ends first.
	if rounded := until.Truncate(time.Second); rounded.Before(until) {
		until = rounded.Add(time.Second)
	}
	issuer, ok := run.issuer.DeepCopyObject().(certpilotv1alpha1.GenericIssuer)
	if !ok {
		return
	}
	key := issuer.Kind() + "/" + issuer.GetNamespace() + "/" + issuer.GetName()
	if recorded := issuer.GetStatus().OrdersPausedUntil; recorded != nil && !until.After(recorded.Add(budget.RecordSlack)) {
		return
	}
	if !b.ledger.ToRecord(key, until, now) {
		return
	}
	base := issuer.DeepCopyObject().(client.Object)
	issuer.GetStatus().OrdersPausedUntil = &metav1.Time{Time: until}
	if err := b.client.Status().Patch(ctx, issuer, client.MergeFrom(base), client.FieldOwner(FieldManager)); err != nil {
		b.ledger.Unrecord(key)
		ctrl.LoggerFrom(ctx).Error(err, "Unable to record the ACME account's pause in the issuer's status; it holds in memory only",
			"issuer", key)
		return
	}
	ctrl.LoggerFrom(ctx).Info("Recorded the ACME account's pause in the issuer's status", "issuer", key,
		"ordersPausedUntil", until.UTC().Format(time.RFC3339))
}
