package renewal

import (
	"math/big"
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

func TestFallbackRenewalTime(t *testing.T) {
	seed := []byte{0x04, 0x2a, 0x9c, 0x11, 0x7e}
	tests := map[string]struct {
		notBefore   time.Time
		lifetime    time.Duration
		renewBefore time.Duration
	}{
		"90 days":                      {notBefore: t0, lifetime: 90 * day, renewBefore: 168 * time.Hour},
		"45 days":                      {notBefore: t0, lifetime: 45 * day, renewBefore: 168 * time.Hour},
		"6 days":                       {notBefore: t0, lifetime: 6 * day, renewBefore: 168 * time.Hour},
		"10-minute Pebble certificate": {notBefore: t0, lifetime: 10 * time.Minute, renewBefore: 168 * time.Hour},
		"90 days, renewBefore longer than lifetime": {notBefore: t0, lifetime: 90 * day, renewBefore: 100 * day},
		"6 days, renewBefore longer than lifetime":  {notBefore: t0, lifetime: 6 * day, renewBefore: 30 * day},
		"45 days, short renewBefore":                {notBefore: t0, lifetime: 45 * day, renewBefore: time.Hour},
		"notBefore in the future":                   {notBefore: t0.Add(time.Hour), lifetime: 90 * day, renewBefore: 168 * time.Hour},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			notAfter := tc.notBefore.Add(tc.lifetime)
			base := RenewalTime(tc.notBefore, notAfter, tc.renewBefore)
			got := FallbackRenewalTime(tc.notBefore, notAfter, tc.renewBefore, seed)
			if got.After(base) {
				t.Errorf("FallbackRenewalTime = base + %v, want never later than RenewalTime", got.Sub(base))
			}
			if maxJitter := tc.lifetime / 100 * JitterPercent; base.Sub(got) >= maxJitter {
				t.Errorf("jitter = %v, want under %d%% of the lifetime (%v)", base.Sub(got), JitterPercent, maxJitter)
			}
			if got.Sub(tc.notBefore) < tc.lifetime/3 {
				t.Errorf("FallbackRenewalTime = notBefore + %v, want at least a third of the lifetime", got.Sub(tc.notBefore))
			}
			if again := FallbackRenewalTime(tc.notBefore, notAfter, tc.renewBefore, seed); !again.Equal(got) {
				t.Errorf("FallbackRenewalTime is not deterministic: %v, then %v", got, again)
			}
			if none := FallbackRenewalTime(tc.notBefore, notAfter, tc.renewBefore, nil); !none.Equal(base) {
				t.Errorf("FallbackRenewalTime without a seed = %v, want RenewalTime %v", none, base)
			}
		})
	}
	t.Run("no positive lifetime renews at notAfter", func(t *testing.T) {
		if got := FallbackRenewalTime(t0, t0.Add(-day), 168*time.Hour, seed); !got.Equal(t0.Add(-day)) {
			t.Errorf("FallbackRenewalTime = %v, want notAfter %v", got, t0.Add(-day))
		}
	})
}

// TestFallbackRenewalTimeSpreads checks what the jitter is for: 200 certificates issued in the
// same second, with consecutive serial numbers, renew over more than 1 % of their lifetime.
func TestFallbackRenewalTimeSpreads(t *testing.T) {
	for _, lifetime := range []time.Duration{90 * day, 45 * day, 6 * day} {
		notAfter := t0.Add(lifetime)
		earliest, latest := notAfter, t0
		for serial := range 200 {
			got := FallbackRenewalTime(t0, notAfter, 168*time.Hour, big.NewInt(int64(1_000_000+serial)).Bytes())
			earliest, latest = minTime(earliest, got), maxTime(latest, got)
		}
		if spread := latest.Sub(earliest); spread < lifetime/100 {
			t.Errorf("lifetime %v: 200 certificates renew within %v, want at least 1%% of the lifetime (%v)", lifetime, spread, lifetime/100)
		}
	}
}
