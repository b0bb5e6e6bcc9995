package renewal

import "time"

// Where a renewal time comes from (the Certificate's status.renewalTimeSource).
const (
	SourceARI      = "ari"
	SourceFallback = "fallback"
)

// DefaultRenewBefore is a Certificate's renewBefore when its spec sets none: the 7 days the
// platform has always used (capped by a fraction of the lifetime, see RenewalTime).
const DefaultRenewBefore = 168 * time.Hour

// Served is what scheduling needs of the certificate being served.
type Served struct {
	NotBefore, NotAfter time.Time
	// Serial seeds the fallback's jitter (leaf.SerialNumber.Bytes()).
	Serial []byte
}

// ScheduleInput is what Schedule decides from.
type ScheduleInput struct {
	Served      Served
	RenewBefore time.Duration
	// Window is the CA's renewal window (RFC 9773) for Served; nil when there is none.
	Window *Window
	// Previous is the renewal time chosen from a window before (zero when none): it stays while
	// it lies inside the window.
	Previous time.Time
	// Random is as in ARIRenewalTime (nil: math/rand/v2).
	Random func(n int64) int64
}

// Schedule returns the renewal time of the served certificate and where it came from: a moment
// inside the CA's window when there is a usable one (SafeWindow), otherwise the jittered
// fallback (FallbackRenewalTime). A window in the past means now; a malformed one is ignored.
func Schedule(in ScheduleInput) (time.Time, string) {
	served := in.Served
	renewBefore := in.RenewBefore
	if renewBefore == 0 {
		renewBefore = DefaultRenewBefore
	}
	fallback := FallbackRenewalTime(served.NotBefore, served.NotAfter, renewBefore, served.Serial)
	if in.Window == nil || validateWindow(in.Window.Start, in.Window.End) != nil {
		return fallback, SourceFallback
	}
	window, atLatest := SafeWindow(*in.Window, served.NotBefore, served.NotAfter)
	if atLatest {
		return window.End, SourceARI
	}
	chosen, err := ChooseARIRenewalTime(window, served.NotAfter, in.Previous, in.Random)
	if err != nil {
		return fallback, SourceFallback
	}
	return chosen, SourceARI
}

// SafeWindow narrows a CA's window to what a certificate valid from notBefore to notAfter can
// follow safely:
//
//   - its end is cut at the latest safe point, notAfter minus a tenth of the lifetime, which
//     leaves time to issue and to retry after failures (9 days of a 90-day certificate, 14
//     hours of a 6-day one). A window that starts at or after that point (one that reaches
//     past notAfter, say) is followed only up to it: atLatest is true and the renewal time is
//     window.End, the safe point itself;
//   - its start is moved to a third of the lifetime when the window also covers later moments
//     (Pebble offers [notBefore, notAfter] for certificates of under two days), so that a fresh
//     certificate is not renewed at once, and again after that.
//
// A window that ends before a third of the lifetime (the CA asks for an early renewal, after a
// revocation) stands as the CA gave it.
func SafeWindow(window Window, notBefore, notAfter time.Time) (narrowed Window, atLatest bool) {
	lifetime := notAfter.Sub(notBefore)
	if lifetime <= 0 {
		return window, false
	}
	latest := notAfter.Add(-lifetime / 10)
	if !window.Start.Before(latest) {
		return Window{Start: latest, End: latest}, true
	}
	narrowed = Window{Start: window.Start, End: minTime(window.End, latest)}
	if earliest := notBefore.Add(lifetime / 3); narrowed.Start.Before(earliest) && narrowed.End.After(earliest) {
		narrowed.Start = earliest
	}
	return narrowed, false
}
