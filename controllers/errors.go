package controllers

import (
	"time"

	"github.com/certpilot/certpilot/internal/outcome"
)

// Errors say what to do next; the classification lives in internal/outcome, shared with the
// solvers. These short names keep the steps readable.
type (
	stalledError = outcome.Stalled
	waitError    = outcome.Wait
)

func stalled(reason, format string, args ...any) error {
	return outcome.NewStalled(reason, format, args...)
}

func wait(after time.Duration, reason, format string, args ...any) error {
	return outcome.NewWait(after, reason, format, args...)
}

func asStalled(err error) (*stalledError, bool) { return outcome.AsStalled(err) }

func asWait(err error) (*waitError, bool) { return outcome.AsWait(err) }

// stalledRecheck is how often a stalled object is looked at again even without a change, since
// the Secrets it names are not watched (certpilot caches only the Secrets it owns).
const stalledRecheck = 10 * time.Minute
