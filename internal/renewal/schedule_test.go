package renewal

import (
	"math"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tests := map[string]struct {
		failedAttempts int32
		want           time.Duration
	}{
		"no failure, no wait":             {failedAttempts: 0, want: 0},
		"negative count is no failure":    {failedAttempts: -1, want: 0},
		"first failure waits a minute":    {failedAttempts: 1, want: time.Minute},
		"second failure waits 10 minutes": {failedAttempts: 2, want: 10 * time.Minute},
		"third failure waits 100 minutes": {failedAttempts: 3, want: 100 * time.Minute},
		"fourth failure waits a day":      {failedAttempts: 4, want: 24 * time.Hour},
		"tenth failure waits a day":       {failedAttempts: 10, want: 24 * time.Hour},
		"huge count does not overflow":    {failedAttempts: math.MaxInt32, want: 24 * time.Hour},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Backoff(tc.failedAttempts); got != tc.want {
				t.Errorf("Backoff(%d) = %v, want %v", tc.failedAttempts, got, tc.want)
			}
		})
	}
}

func TestRequeueAfter(t *testing.T) {
	tests := map[string]struct {
		renewalTime time.Time
		want        time.Duration
	}{
		"an hour ahead waits an hour":           {renewalTime: t0.Add(time.Hour), want: time.Hour},
		"a nanosecond ahead waits a nanosecond": {renewalTime: t0.Add(time.Nanosecond), want: time.Nanosecond},
		"exactly a day ahead waits a day":       {renewalTime: t0.Add(24 * time.Hour), want: 24 * time.Hour},
		"weeks ahead is capped at a day":        {renewalTime: t0.Add(83 * day), want: MaxRequeueAfter},
		"centuries ahead is capped at a day":    {renewalTime: t0.AddDate(500, 0, 0), want: MaxRequeueAfter},
		"due now means issue now":               {renewalTime: t0, want: 0},
		"overdue means issue now, not negative": {renewalTime: t0.Add(-time.Hour), want: 0},
		"zero renewal time means issue now":     {renewalTime: time.Time{}, want: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := RequeueAfter(t0, tc.renewalTime); got != tc.want {
				t.Errorf("RequeueAfter(%v, %v) = %v, want %v", t0, tc.renewalTime, got, tc.want)
			}
		})
	}
}

func TestRetryTime(t *testing.T) {
	none := time.Time{}
	tests := map[string]struct {
		failedAttempts   int32
		serverRetryAfter time.Duration
		notAfter         time.Time // relative to lastFailure = t0
		want             time.Duration
	}{
		"first failure, far from expiry":    {failedAttempts: 1, notAfter: t0.Add(30 * day), want: time.Minute},
		"second failure, far from expiry":   {failedAttempts: 2, notAfter: t0.Add(30 * day), want: 10 * time.Minute},
		"third failure, far from expiry":    {failedAttempts: 3, notAfter: t0.Add(30 * day), want: 100 * time.Minute},
		"fourth failure, far from expiry":   {failedAttempts: 4, notAfter: t0.Add(30 * day), want: 24 * time.Hour},
		"no certificate yet: plain backoff": {failedAttempts: 4, notAfter: none, want: 24 * time.Hour},
		"daily wait capped at half of 30 hours left": {
			failedAttempts: 9, notAfter: t0.Add(30 * time.Hour), want: 15 * time.Hour,
		},
		"100 minutes capped at half of an hour left": {
			failedAttempts: 3, notAfter: t0.Add(time.Hour), want: 30 * time.Minute,
		},
		"a minute left still waits a minute, not less": {
			failedAttempts: 9, notAfter: t0.Add(time.Minute), want: time.Minute,
		},
		"expired: hourly at most":                            {failedAttempts: 9, notAfter: t0.Add(-time.Hour), want: ExpiredRetry},
		"expired, early failure: the backoff's shorter step": {failedAttempts: 2, notAfter: t0.Add(-time.Hour), want: 10 * time.Minute},
		"expired, the CA's Retry-After still wins": {
			failedAttempts: 9, serverRetryAfter: 3 * time.Hour, notAfter: t0.Add(-time.Hour), want: 3 * time.Hour,
		},
		"CA's Retry-After longer than the backoff wins": {
			failedAttempts: 1, serverRetryAfter: 3 * time.Hour, notAfter: t0.Add(30 * day), want: 3 * time.Hour,
		},
		"CA's Retry-After shorter than the backoff: backoff": {
			failedAttempts: 3, serverRetryAfter: 5 * time.Minute, notAfter: t0.Add(30 * day), want: 100 * time.Minute,
		},
		"CA's Retry-After wins over the expiry cap": {
			failedAttempts: 4, serverRetryAfter: 2 * time.Hour, notAfter: t0.Add(time.Hour), want: 2 * time.Hour,
		},
		"CA's week-long Retry-After is capped at a day": {
			failedAttempts: 1, serverRetryAfter: 7 * day, notAfter: t0.Add(30 * day), want: MaxBackoff,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := RetryTime(t0, tc.failedAttempts, tc.serverRetryAfter, tc.notAfter)
			if !got.Equal(t0.Add(tc.want)) {
				t.Errorf("RetryTime(t0, %d, %v, notAfter) = t0 + %v, want t0 + %v", tc.failedAttempts, tc.serverRetryAfter, got.Sub(t0), tc.want)
			}
		})
	}
}

// TestRetryTimeReachesExpiry checks the point of the expiry cap: a certificate that keeps
// failing from a day and a half before expiry is retried more than twice before it expires,
// where the plain daily backoff would try once.
func TestRetryTimeReachesExpiry(t *testing.T) {
	notAfter := t0.Add(36 * time.Hour)
	at, attempts := t0, int32(4)
	tries := 0
	for at.Before(notAfter) {
		tries++
		at = RetryTime(at, attempts, 0, notAfter)
		attempts++
	}
	if tries < 10 {
		t.Errorf("%d attempts before expiry, want retries closing in on notAfter", tries)
	}
}

func TestNextEvaluation(t *testing.T) {
	tests := map[string]struct {
		moments []time.Time
		want    time.Time
	}{
		"earliest future moment":   {moments: []time.Time{t0.Add(3 * time.Hour), t0.Add(time.Hour), t0.Add(2 * time.Hour)}, want: t0.Add(time.Hour)},
		"past moments are ignored": {moments: []time.Time{t0.Add(-time.Hour), t0.Add(2 * time.Hour)}, want: t0.Add(2 * time.Hour)},
		"now itself is past":       {moments: []time.Time{t0, t0.Add(time.Minute)}, want: t0.Add(time.Minute)},
		"zero moments are ignored": {moments: []time.Time{{}, t0.Add(time.Minute), {}}, want: t0.Add(time.Minute)},
		"nothing ahead: zero":      {moments: []time.Time{t0.Add(-day), t0}, want: time.Time{}},
		"no moments: zero":         {want: time.Time{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NextEvaluation(t0, tc.moments...); !got.Equal(tc.want) {
				t.Errorf("NextEvaluation(t0, %v) = %v, want %v", tc.moments, got, tc.want)
			}
		})
	}
}

// TestTimeline runs the time functions together the way the controller will, for each lifetime
// Let's Encrypt issues: the renewal time (ARI when the window is usable, the
// jittered fallback otherwise) and the next moment to look at the certificate again.
func TestTimeline(t *testing.T) {
	serial := []byte{0x03, 0x7a, 0x51, 0xe2, 0x90, 0x0c}
	lowest := func(int64) int64 { return 0 }
	type window struct{ start, end time.Duration } // relative to notBefore
	for _, lifetime := range []time.Duration{90 * day, 45 * day, 6 * day} {
		notBefore := t0
		notAfter := notBefore.Add(lifetime)
		fallback := FallbackRenewalTime(notBefore, notAfter, 168*time.Hour, serial)
		tests := map[string]struct {
			now         time.Duration // relative to notBefore
			renewBefore time.Duration
			window      *window
			// wantRenewal is the expected renewal time relative to notBefore; -1 means the
			// fallback.
			wantRenewal time.Duration
			wantARI     bool
			wantNext    time.Duration // relative to notBefore
			wantDue     bool
		}{
			"notBefore in the future (CA clock ahead)": {
				now: -time.Minute, renewBefore: 168 * time.Hour, wantRenewal: -1, wantNext: 0,
			},
			"fresh certificate, no ARI": {
				now: time.Minute, renewBefore: 168 * time.Hour, wantRenewal: -1, wantNext: fallback.Sub(notBefore),
			},
			"renewBefore longer than the lifetime": {
				now: time.Minute, renewBefore: 2 * lifetime, wantRenewal: FallbackRenewalTime(notBefore, notAfter, 2*lifetime, serial).Sub(notBefore),
				wantNext: FallbackRenewalTime(notBefore, notAfter, 2*lifetime, serial).Sub(notBefore),
			},
			"ARI window in the future": {
				now: time.Minute, renewBefore: 168 * time.Hour, window: &window{lifetime / 2, lifetime/2 + lifetime/20},
				wantRenewal: lifetime / 2, wantARI: true, wantNext: lifetime / 2,
			},
			"ARI window in the past: renew now": {
				now: lifetime / 4, renewBefore: 168 * time.Hour, window: &window{lifetime / 8, lifetime / 6},
				wantRenewal: lifetime / 8, wantARI: true, wantDue: true,
				wantNext: lifetime,
			},
			"malformed ARI window: fallback": {
				now: time.Minute, renewBefore: 168 * time.Hour, window: &window{lifetime / 2, lifetime / 3},
				wantRenewal: -1, wantNext: fallback.Sub(notBefore),
			},
			"past the fallback renewal time": {
				now: fallback.Sub(notBefore) + time.Second, renewBefore: 168 * time.Hour, wantRenewal: -1, wantDue: true, wantNext: lifetime,
			},
			"expired": {
				now: lifetime, renewBefore: 168 * time.Hour, wantRenewal: -1, wantDue: true,
				wantNext: -1,
			},
		}
		for name, tc := range tests {
			t.Run(lifetime.String()+"/"+name, func(t *testing.T) {
				now := notBefore.Add(tc.now)
				renewalTime := FallbackRenewalTime(notBefore, notAfter, tc.renewBefore, serial)
				usedARI := false
				if tc.window != nil {
					chosen, err := ChooseARIRenewalTime(Window{notBefore.Add(tc.window.start), notBefore.Add(tc.window.end)}, notAfter, time.Time{}, lowest)
					if err == nil {
						renewalTime, usedARI = chosen, true
					}
				}
				wantRenewal := fallback
				if tc.wantRenewal != -1 {
					wantRenewal = notBefore.Add(tc.wantRenewal)
				}
				if !renewalTime.Equal(wantRenewal) || usedARI != tc.wantARI {
					t.Errorf("renewal time = notBefore + %v (ARI %v), want notBefore + %v (ARI %v)",
						renewalTime.Sub(notBefore), usedARI, wantRenewal.Sub(notBefore), tc.wantARI)
				}
				if due := RequeueAfter(now, renewalTime) == 0; due != tc.wantDue {
					t.Errorf("due = %v, want %v", due, tc.wantDue)
				}
				next := NextEvaluation(now, notBefore, notAfter, renewalTime)
				wantNext := time.Time{}
				if tc.wantNext != -1 {
					wantNext = notBefore.Add(tc.wantNext)
				}
				if !next.Equal(wantNext) {
					t.Errorf("NextEvaluation = %v, want %v", next, wantNext)
				}
			})
		}
	}
}
