package renewal

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
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

// JitterPercent is the largest share of a certificate's lifetime by which FallbackRenewalTime
// moves its renewal earlier.
const JitterPercent = 3

// FallbackRenewalTime is the renewal time when the CA offers no usable ARI window: RenewalTime
// made earlier by a jitter of up to JitterPercent of the lifetime (2.7 days of a 90-day
// certificate, 4.3 hours of a 6-day one), so that certificates issued together, which would all
// be due in the same second, spread over that share of their lifetime instead and do not hit
// the CA (and its rate limits) at once.
//
// The jitter is deterministic: a hash of seed, which should be unique per certificate and
// stable for its lifetime; pass the certificate's serial number (leaf.SerialNumber.Bytes()).
// The same certificate therefore always gets the same time, so the status does not change
// from one reconcile to the next. An empty seed means no jitter.
//
// The jitter only ever moves renewal earlier, never past RenewalTime's margin before notAfter,
// and never before a third of the lifetime has passed, so the no-loop guarantee of RenewalTime
// holds.
func FallbackRenewalTime(notBefore, notAfter time.Time, renewBefore time.Duration, seed []byte) time.Time {
	renewalTime := RenewalTime(notBefore, notAfter, renewBefore)
	lifetime := notAfter.Sub(notBefore)
	if lifetime <= 0 || len(seed) == 0 {
		return renewalTime
	}
	maxJitter := uint64(lifetime / 100 * JitterPercent)
	sum := sha256.Sum256(seed)
	// jitter = maxJitter * u / 2^64 for a uniform 64-bit u: in [0, maxJitter), without overflow.
	jitter, _ := bits.Mul64(maxJitter, binary.BigEndian.Uint64(sum[:8]))
	earliest := notBefore.Add(lifetime / 3)
	return maxTime(renewalTime.Add(-time.Duration(jitter)), minTime(earliest, renewalTime))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "(unset)"
	}
	return t.UTC().Format(time.RFC3339)
}
