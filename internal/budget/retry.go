// Package budget decides how much of a shared ACME account one Certificate and one namespace
// may spend: whether a failure's backoff still holds after the spec changed (Retry), how many
// new orders a namespace may create with one account (Decide, Ledger), and how long the account
// pauses after the CA answered rateLimited (PausesFor). Every decision is a pure function of
// its input and the clock the caller passes; Ledger only keeps the state between decisions.
//
// A tenant's Certificates share the issuer's ACME account with every other tenant's: its rate
// limits (Let's Encrypt: 300 new orders per account per 3 hours, 5 failed validations per name
// per hour) are the platform's, not the tenant's. docs/tenancy.md describes the defaults.
//
// The package imports nothing from Kubernetes.
package budget

import "time"

// Failure reasons the CA decided: the order or a validation failed at the CA, or the CA asked
// to slow down. The controller records them in status.lastFailureReason.
const (
	ReasonOrderInvalid = "OrderInvalid"
	ReasonCASlowDown   = "CASlowDown"
	ReasonAcceptFailed = "AcceptFailed"
)

// CACaused reports whether a failure with reason is the CA's verdict on what was asked (a
// validation that failed, an order marked invalid, a rate limit): another spec does not make
// the next request any cheaper for the shared account, so a spec change does not lift its
// backoff. Other failures (the CA refused the request as written, a key that did not match) are
// fixed by changing the spec, and a change retries at once.
func CACaused(reason string) bool {
	switch reason {
	case ReasonOrderInvalid, ReasonCASlowDown, ReasonAcceptFailed:
		return true
	}
	return false
}

// FailureMemory is how long a Certificate's failures count against it across spec changes: a
// spec change more than FailureMemory after the last failure starts the count again, so that a
// Certificate fixed a day later does not start at the daily backoff.
const FailureMemory = 24 * time.Hour

// RetryInput is what Retry reads: the Certificate's recorded failures, whether its spec (or
// its renew annotation) changed since the last failure, and when the backoff ends.
type RetryInput struct {
	Now time.Time
	// Attempts counts the failures since the last success; LastFailure and LastReason are the
	// last one's time and reason.
	Attempts    int32
	LastFailure time.Time
	LastReason  string
	// SpecChanged is set when the spec's generation moved past the one the last status saw, or
	// the renew annotation asks for an issuance not acted on yet.
	SpecChanged bool
	// BackoffEnds is when the backoff of Attempts failures ends (renewal.RetryTime).
	BackoffEnds time.Time
}

// RetryVerdict is what Retry decides.
type RetryVerdict struct {
	// Wait is set when no order may be created before BackoffEnds.
	Wait bool
	// Forget is set when the recorded failures no longer count: a spec change long after them.
	Forget bool
	// Kept is set when the spec changed and the backoff holds all the same (Wait is set).
	Kept bool
}

// Retry decides whether a Certificate with failures may order now. Without a spec change the
// backoff holds. A spec change lifts it for a failure the spec caused; for one the CA caused
// (CACaused) it lifts nothing within FailureMemory, so that changing the spec or the renew
// annotation over and over cannot spend the shared account's orders and failed validations at
// the pace of the edits. A spec change after FailureMemory forgets the failures.
func Retry(in RetryInput) RetryVerdict {
	if in.Attempts <= 0 || in.LastFailure.IsZero() {
		return RetryVerdict{}
	}
	if in.SpecChanged && in.Now.Sub(in.LastFailure) > FailureMemory {
		return RetryVerdict{Forget: true}
	}
	if in.SpecChanged && !CACaused(in.LastReason) {
		return RetryVerdict{}
	}
	wait := in.Now.Before(in.BackoffEnds)
	return RetryVerdict{Wait: wait, Kept: wait && in.SpecChanged}
}
