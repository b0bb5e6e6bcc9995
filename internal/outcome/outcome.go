// Package outcome classifies what a reconcile step (or a solver) returns, so the reconciler
// knows what to do next (Flux's classification):
//   - Stalled: the spec or a referenced object is wrong; set Stalled, do not retry until
//     something changes (a slow safety recheck only, or the backoff of a failed issuance).
//   - Wait: nothing is wrong, something is not there yet; requeue after the delay.
//   - any other error: transient; return it and let the rate limiter back off.
package outcome

import (
	"errors"
	"fmt"
	"time"
)

// Stalled is a problem a person must fix.
type Stalled struct {
	Reason  string
	Message string
	// After, when set, replaces the reconciler's slow recheck: the backoff of a failed
	// issuance, so that a permanent error is not retried at every recheck.
	After time.Duration
}

func (e *Stalled) Error() string { return e.Message }

// Wait is progress that needs time: requeue after the delay, no failure counted.
type Wait struct {
	Reason  string
	Message string
	After   time.Duration
}

func (e *Wait) Error() string { return e.Message }

// NewStalled returns a Stalled error with a formatted message.
func NewStalled(reason, format string, args ...any) error {
	return &Stalled{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// NewWait returns a Wait error that asks to look again after the delay.
func NewWait(after time.Duration, reason, format string, args ...any) error {
	return &Wait{Reason: reason, Message: fmt.Sprintf(format, args...), After: after}
}

// AsStalled finds a Stalled error in err's chain.
func AsStalled(err error) (*Stalled, bool) {
	var s *Stalled
	return s, errors.As(err, &s)
}

// AsWait finds a Wait error in err's chain.
func AsWait(err error) (*Wait, bool) {
	var w *Wait
	return w, errors.As(err, &w)
}
