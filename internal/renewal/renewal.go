package renewal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// shortLivedLifetime is the lifetime under which a certificate renews at half-life instead of
// at two thirds of it. Let's Encrypt's "shortlived" profile issues 160-hour certificates; a
// third of that (53 h) would leave little room for a day of failed attempts, half (80 h) does.
const shortLivedLifetime = 10 * 24 * time.Hour

// RenewalTime returns when a certificate valid from notBefore to notAfter is renewed:
// notAfter - min(renewBefore, lifetime/3), or lifetime/2 for lifetimes under ten days.
//
// Capping renewBefore by a fraction of the lifetime is what keeps short certificates from
// looping: with the default renewBefore of 168h, a 6-day certificate would be due the moment it
// is issued, and so would its replacement. With the cap a fresh certificate is never due before
// a third (or half) of its life has passed, so a 90-day or 45-day certificate renews 7 days
// before expiry, a 160-hour one at half-life and a 10-minute Pebble test certificate after 5
// minutes.
//
// A renewBefore of zero or less means "not set": the fraction alone decides. A certificate with
// no positive lifetime (notAfter at or before notBefore) is never valid; its renewal time is
// notAfter, the earlier of the two, so it is replaced as soon as possible.
func RenewalTime(notBefore, notAfter time.Time, renewBefore time.Duration) time.Time {
	lifetime := notAfter.Sub(notBefore)
	if lifetime <= 0 {
		return notAfter
	}
	limit := lifetime / 3
	if lifetime < shortLivedLifetime {
		limit = lifetime / 2
	}
	if renewBefore > 0 && renewBefore < limit {
		limit = renewBefore
	}
	return notAfter.Add(-limit)
}

// ErrInvalidWindow is returned (wrapped) by ARIRenewalTime for a window the CA should not have
// sent. Callers fall back to RenewalTime.
var ErrInvalidWindow = errors.New("invalid ACME renewal information window")

// ARIRenewalTime picks the renewal time inside the window a CA suggests through ACME Renewal
// Information (RFC 9773, section 4.2): a uniformly random point in [windowStart, windowEnd), so
// that certificates issued together do not all renew in the same second.
//
// random returns a uniform integer in [0, n), like rand.Int64N; tests inject a fixed one, and
// nil means math/rand/v2. Values outside [0, n) are clamped into the window, so a faulty
// random source cannot schedule a renewal outside what the CA asked for.
//
// A window with a zero start or end (a field missing from the response) or whose end is before
// its start is invalid and yields ErrInvalidWindow. A window in the past is valid: RFC 9773 asks
// clients to renew immediately, which RequeueAfter expresses by returning 0.
func ARIRenewalTime(windowStart, windowEnd time.Time, random func(n int64) int64) (time.Time, error) {
	if windowStart.IsZero() || windowEnd.IsZero() {
		return time.Time{}, fmt.Errorf("%w: start %s and end %s must both be set",
			ErrInvalidWindow, formatTime(windowStart), formatTime(windowEnd))
	}
	if windowEnd.Before(windowStart) {
		return time.Time{}, fmt.Errorf("%w: end %s is before start %s",
			ErrInvalidWindow, formatTime(windowEnd), formatTime(windowStart))
	}
	width := int64(windowEnd.Sub(windowStart))
	if width == 0 {
		// rand.Int64N panics on 0; a single-instant window leaves no choice anyway.
		return windowStart, nil
	}
	if random == nil {
		random = rand.Int64N
	}
	offset := min(max(random(width), 0), width-1)
	return windowStart.Add(time.Duration(offset)), nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "(unset)"
	}
	return t.UTC().Format(time.RFC3339)
}
