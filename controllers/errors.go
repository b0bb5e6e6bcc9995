package controllers

import (
	"errors"
	"fmt"
	"time"
)

// Errors say what to do next (Flux's classification):
//   - stalledError: the spec or a referenced object is wrong; set Stalled, do not retry until
//     something changes (a long safety requeue only).
//   - waitError: nothing is wrong, something is not there yet; requeue after a delay.
//   - any other error: transient; return it and let the rate limiter back off.

// stalledError is a problem a person must fix.
type stalledError struct {
	reason  string
	message string
	// after, when set, replaces stalledRecheck: the backoff of a failed issuance, so that a
	// permanent error is not retried every recheck.
	after time.Duration
}

func (e *stalledError) Error() string { return e.message }

func stalled(reason, format string, args ...any) error {
	return &stalledError{reason: reason, message: fmt.Sprintf(format, args...)}
}

// waitError is progress that needs time: requeue after the delay, no failure counted.
type waitError struct {
	reason  string
	message string
	after   time.Duration
}

func (e *waitError) Error() string { return e.message }

func wait(after time.Duration, reason, format string, args ...any) error {
	return &waitError{reason: reason, message: fmt.Sprintf(format, args...), after: after}
}

func asStalled(err error) (*stalledError, bool) {
	var s *stalledError
	return s, errors.As(err, &s)
}

func asWait(err error) (*waitError, bool) {
	var w *waitError
	return w, errors.As(err, &w)
}

// stalledRecheck is how often a stalled object is looked at again even without a change, since
// the Secrets it names are not watched (certpilot caches only the Secrets it owns).
const stalledRecheck = 10 * time.Minute
