package renewal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/certpilot/certpilot/internal/pki"
)

// ACME Renewal Information (RFC 9773): the CA suggests a window, the client renews at a random
// moment inside it and checks the window again as the CA's Retry-After asks.

// ErrInvalidWindow is returned (wrapped) by ARIRenewalTime and ChooseARIRenewalTime for a window
// the CA should not have sent. Callers fall back to FallbackRenewalTime.
var ErrInvalidWindow = errors.New("invalid ACME renewal information window")

// Window is a renewal window a CA suggests, [Start, End) (acme.RenewalInfo's WindowStart and
// WindowEnd).
type Window struct {
	Start, End time.Time
}

// ChooseARIRenewalTime returns the renewal time, inside window, of a certificate expiring at
// notAfter, given the time previously chosen (zero when none):
//
//   - previous, when it lies inside the window: a window fetched again and unchanged, or
//     changed but still covering the choice, keeps its renewal time, so the status is not
//     rewritten at every fetch and the choice stays uniform;
//   - otherwise a uniformly random moment inside the window (ARIRenewalTime; random as there).
//
// A window in the past yields a time in the past: renew now (RequeueAfter returns 0, and
// ShouldIssue with Input.RenewalTime set to it reports RenewalDue). The part of a window after
// notAfter is cut off, so a renewal is never scheduled after expiry; a window that starts at or
// after notAfter, one with a missing bound, and one whose end is not after its start (RFC 9773
// section 4.2) yield ErrInvalidWindow: use FallbackRenewalTime instead. A zero notAfter cuts
// nothing.
func ChooseARIRenewalTime(window Window, notAfter, previous time.Time, random func(n int64) int64) (time.Time, error) {
	if err := validateWindow(window.Start, window.End); err != nil {
		return time.Time{}, err
	}
	end := window.End
	if !notAfter.IsZero() {
		if !window.Start.Before(notAfter) {
			return time.Time{}, fmt.Errorf("%w: it starts at %s, when the certificate has expired (%s)",
				ErrInvalidWindow, formatTime(window.Start), formatTime(notAfter))
		}
		end = minTime(end, notAfter)
	}
	if !previous.IsZero() && !previous.Before(window.Start) && previous.Before(end) {
		return previous, nil
	}
	return ARIRenewalTime(window.Start, end, random)
}

// ARIRenewalTime picks the renewal time inside the window a CA suggests through ACME Renewal
// Information (RFC 9773, section 4.2): a uniformly random point in [windowStart, windowEnd), so
// that certificates issued together do not all renew in the same second.
//
// random returns a uniform integer in [0, n), like rand.Int64N; tests inject a fixed one, and
// nil means math/rand/v2. Values outside [0, n) are clamped into the window, so a faulty
// random source cannot schedule a renewal outside what the CA asked for.
//
// A window with a zero start or end (a field missing from the response) or whose end is at or
// before its start is invalid (RFC 9773 section 4.2) and yields ErrInvalidWindow. A window in
// the past is valid: RFC 9773 asks clients to renew immediately, which RequeueAfter expresses
// by returning 0.
func ARIRenewalTime(windowStart, windowEnd time.Time, random func(n int64) int64) (time.Time, error) {
	if err := validateWindow(windowStart, windowEnd); err != nil {
		return time.Time{}, err
	}
	width := int64(windowEnd.Sub(windowStart))
	if random == nil {
		random = rand.Int64N
	}
	offset := min(max(random(width), 0), width-1)
	return windowStart.Add(time.Duration(offset)), nil
}

func validateWindow(start, end time.Time) error {
	if start.IsZero() || end.IsZero() {
		return fmt.Errorf("%w: start %s and end %s must both be set",
			ErrInvalidWindow, formatTime(start), formatTime(end))
	}
	if !end.After(start) {
		return fmt.Errorf("%w: end %s is not after start %s",
			ErrInvalidWindow, formatTime(end), formatTime(start))
	}
	return nil
}

// Bounds of how often a certificate's renewal information is fetched (RFC 9773 section 4.3
// asks clients to bound the server's Retry-After).
const (
	// MinRenewalInfoInterval: never more often than once a minute.
	MinRenewalInfoInterval = time.Minute
	// MaxRenewalInfoInterval: at least every 12 hours, so a window the CA moves (a mass
	// revocation) is seen within half a day.
	MaxRenewalInfoInterval = 12 * time.Hour
	// DefaultRenewalInfoInterval is used when the server sent no Retry-After, and after an
	// error or a malformed answer: what Let's Encrypt and Pebble send.
	DefaultRenewalInfoInterval = 6 * time.Hour
)

// NextRenewalInfoFetch returns when to fetch a certificate's renewal information again, after a
// fetch at now whose response asked for retryAfter (acme.RenewalInfo.RetryAfter; after a failed
// fetch, the wait acme.RetryAfterOf reports, or 0): retryAfter bounded to
// [MinRenewalInfoInterval, MaxRenewalInfoInterval], or DefaultRenewalInfoInterval when it is 0.
//
// The controller requeues at the earlier of this and the renewal time (see NextEvaluation),
// and stops fetching once the certificate is replaced or expired.
func NextRenewalInfoFetch(now time.Time, retryAfter time.Duration) time.Time {
	if retryAfter <= 0 {
		return now.Add(DefaultRenewalInfoInterval)
	}
	return now.Add(min(max(retryAfter, MinRenewalInfoInterval), MaxRenewalInfoInterval))
}

// CanReplace reports whether the order that reissues the certificate in in.Secret may name it
// in replaces (RFC 9773 section 5), for an issuer now using account accountURI. Only a
// certificate this server and account issued qualifies: the Secret must record the same server
// as in.IssuerServer (compared as ShouldIssue compares them) and accountURI, and share at least
// one name (DNS name or IP address) with in.DNSNames. A CA refuses any other replaces, and not always as
// alreadyReplaced (Pebble answers unauthorized for another account and serverInternal for a
// certificate it does not know), so such an order would fail at every retry instead of falling
// back. A Secret that records neither server nor account (written before certpilot recorded
// them) gets no replaces.
func CanReplace(in Input, accountURI string) bool {
	secret := in.Secret
	if secret == nil || secret.IssuerServer == "" || secret.IssuerAccount == "" || in.IssuerServer == "" || accountURI == "" {
		return false
	}
	if !sameServer(secret.IssuerServer, in.IssuerServer) || secret.IssuerAccount != accountURI {
		return false
	}
	leaf, err := pki.ParseLeaf(secret.CertificatePEM)
	if err != nil {
		return false
	}
	want := nameSet(in.DNSNames)
	return len(difference(want, nameSet(pki.LeafNames(leaf)))) < len(want)
}
