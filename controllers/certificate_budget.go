package controllers

import (
	"context"
	"time"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/budget"
)

// orderBudget applies the shared ACME account's limits to a reconcile (budget.Ledger): each
// namespace's new-order budget per account, and the account's pause after a rate limit.
type orderBudget struct {
	// ledger is nil when there is neither.
	ledger *budget.Ledger
	clock  clock.PassiveClock
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
// budget (Stalled, Throttled, until the next order is allowed).
func (b orderBudget) take(run *certificateRun) error {
	if b.ledger == nil {
		return nil
	}
	now := b.clock.Now()
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
	return wait(after, verdict.Reason, "%s", message)
}

// rateLimited pauses the account's new orders after the CA's rate limit (err): the namespace's
// for the whole Retry-After, the other namespaces' for at most budget.MaxAccountPause.
func (b orderBudget) rateLimited(ctx context.Context, run *certificateRun, err error, retryAfter time.Duration) {
	if b.ledger == nil || !acme.IsRateLimited(err) {
		return
	}
	until := b.ledger.RateLimited(accountOf(run), run.cert.Namespace, retryAfter, b.clock.Now())
	ctrl.LoggerFrom(ctx).Info("Paused new orders with the ACME account: the CA answered rateLimited",
		"account", accountOf(run), "namespacePausedUntil", until.UTC().Format(time.RFC3339))
}
