package renewal

import (
	"errors"
	"testing"
	"time"
)

const day = 24 * time.Hour

var t0 = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

func TestRenewalTime(t *testing.T) {
	tests := map[string]struct {
		lifetime    time.Duration
		renewBefore time.Duration
		want        time.Time
	}{
		"90 days renews 7 days before expiry": {
			lifetime: 90 * day, renewBefore: 168 * time.Hour, want: t0.Add(83 * day),
		},
		"64 days renews 7 days before expiry": {
			lifetime: 64 * day, renewBefore: 168 * time.Hour, want: t0.Add(57 * day),
		},
		"45 days renews 7 days before expiry": {
			lifetime: 45 * day, renewBefore: 168 * time.Hour, want: t0.Add(38 * day),
		},
		"15 days is capped at a third of its lifetime": {
			lifetime: 15 * day, renewBefore: 168 * time.Hour, want: t0.Add(10 * day),
		},
		"exactly 10 days uses a third": {
			lifetime: 10 * day, renewBefore: 168 * time.Hour, want: t0.Add(10*day - 80*time.Hour),
		},
		"just under 10 days uses half": {
			lifetime: 10*day - time.Second, renewBefore: 168 * time.Hour, want: t0.Add((10*day - time.Second) / 2),
		},
		"160 hours (shortlived) renews at half-life": {
			lifetime: 160 * time.Hour, renewBefore: 168 * time.Hour, want: t0.Add(80 * time.Hour),
		},
		"6 days renews at half-life": {
			lifetime: 6 * day, renewBefore: 168 * time.Hour, want: t0.Add(3 * day),
		},
		"10-minute Pebble certificate renews after 5 minutes": {
			lifetime: 10 * time.Minute, renewBefore: 168 * time.Hour, want: t0.Add(5 * time.Minute),
		},
		"renewBefore shorter than the cap wins": {
			lifetime: 90 * day, renewBefore: time.Hour, want: t0.Add(90*day - time.Hour),
		},
		"renewBefore longer than the lifetime is capped": {
			lifetime: 90 * day, renewBefore: 100 * day, want: t0.Add(60 * day),
		},
		"zero renewBefore means the cap alone": {
			lifetime: 90 * day, renewBefore: 0, want: t0.Add(60 * day),
		},
		"negative renewBefore means the cap alone": {
			lifetime: 6 * day, renewBefore: -time.Hour, want: t0.Add(3 * day),
		},
		"zero lifetime renews at notAfter": {
			lifetime: 0, renewBefore: 168 * time.Hour, want: t0,
		},
		"negative lifetime renews at notAfter, the earlier bound": {
			lifetime: -day, renewBefore: 168 * time.Hour, want: t0.Add(-day),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := RenewalTime(t0, t0.Add(tc.lifetime), tc.renewBefore)
			if !got.Equal(tc.want) {
				t.Errorf("RenewalTime(lifetime %v, renewBefore %v) = %v (%v after notBefore), want %v (%v after notBefore)",
					tc.lifetime, tc.renewBefore, got, got.Sub(t0), tc.want, tc.want.Sub(t0))
			}
		})
	}
}

// TestRenewalTimeNeverLoops checks the property the cap exists for: a certificate that was just
// issued is never already due, whatever its lifetime and renewBefore, and it is always renewed
// before it expires.
func TestRenewalTimeNeverLoops(t *testing.T) {
	lifetimes := []time.Duration{time.Minute, 10 * time.Minute, time.Hour, 160 * time.Hour, 10 * day, 45 * day, 90 * day, 398 * day}
	renewBefores := []time.Duration{-time.Hour, 0, 5 * time.Minute, 168 * time.Hour, 30 * day, 1000 * day}
	for _, lifetime := range lifetimes {
		for _, renewBefore := range renewBefores {
			notAfter := t0.Add(lifetime)
			got := RenewalTime(t0, notAfter, renewBefore)
			if !got.After(t0) || got.After(notAfter) {
				t.Errorf("RenewalTime(lifetime %v, renewBefore %v) = notBefore + %v, want within (notBefore, notAfter]",
					lifetime, renewBefore, got.Sub(t0))
			}
			// At least a third of the lifetime passes before a renewal, so a CA that issues
			// the same lifetime again cannot make the controller renew in a loop.
			if got.Sub(t0) < lifetime/3 {
				t.Errorf("RenewalTime(lifetime %v, renewBefore %v) = notBefore + %v, want at least a third of the lifetime",
					lifetime, renewBefore, got.Sub(t0))
			}
		}
	}
}

func TestARIRenewalTime(t *testing.T) {
	start, end := t0, t0.Add(2*day)
	width := int64(2 * day)
	fixed := func(v int64) func(int64) int64 {
		return func(n int64) int64 {
			if n != width {
				t.Errorf("random called with n = %d, want the window's width %d", n, width)
			}
			return v
		}
	}
	mustNotCall := func(int64) int64 {
		t.Error("random called for a window that leaves no choice")
		return 0
	}
	tests := map[string]struct {
		start, end time.Time
		random     func(int64) int64
		want       time.Time
		wantErr    bool
	}{
		"lowest draw is the window's start": {start: start, end: end, random: fixed(0), want: start},
		"middle draw is the middle":         {start: start, end: end, random: fixed(width / 2), want: start.Add(day)},
		"highest draw is just before the end": {
			start: start, end: end, random: fixed(width - 1), want: end.Add(-time.Nanosecond),
		},
		"draw past the end is clamped into the window": {
			start: start, end: end, random: fixed(width + 5), want: end.Add(-time.Nanosecond),
		},
		"negative draw is clamped to the start": {start: start, end: end, random: fixed(-7), want: start},
		"window in the past is valid":           {start: t0.Add(-3 * day), end: t0.Add(-day), random: func(int64) int64 { return 0 }, want: t0.Add(-3 * day)},
		"single-instant window is its start":    {start: start, end: start, random: mustNotCall, want: start},
		"end before start is invalid":           {start: end, end: start, random: mustNotCall, wantErr: true},
		"missing start is invalid":              {start: time.Time{}, end: end, random: mustNotCall, wantErr: true},
		"missing end is invalid":                {start: start, end: time.Time{}, random: mustNotCall, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ARIRenewalTime(tc.start, tc.end, tc.random)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidWindow) {
					t.Fatalf("ARIRenewalTime(%v, %v) error = %v, want ErrInvalidWindow", tc.start, tc.end, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ARIRenewalTime(%v, %v) error = %v, want none", tc.start, tc.end, err)
			}
			if !got.Equal(tc.want) {
				t.Errorf("ARIRenewalTime(%v, %v) = %v, want %v", tc.start, tc.end, got, tc.want)
			}
		})
	}
}

// TestARIRenewalTimeDefaultRandom checks that a nil random source draws real, varying points
// inside the window.
func TestARIRenewalTimeDefaultRandom(t *testing.T) {
	start, end := t0, t0.Add(day)
	seen := map[time.Time]bool{}
	for range 100 {
		got, err := ARIRenewalTime(start, end, nil)
		if err != nil {
			t.Fatalf("ARIRenewalTime error = %v", err)
		}
		if got.Before(start) || !got.Before(end) {
			t.Fatalf("ARIRenewalTime = %v, want within [%v, %v)", got, start, end)
		}
		seen[got] = true
	}
	if len(seen) < 2 {
		t.Errorf("100 draws gave %d distinct times, want randomness", len(seen))
	}
}
