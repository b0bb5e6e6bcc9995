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

func TestNextAttempt(t *testing.T) {
	tests := map[string]struct {
		lastFailure    time.Time
		failedAttempts int32
		want           time.Time
	}{
		"no failure: at once":              {lastFailure: t0, failedAttempts: 0, want: t0},
		"first failure: a minute later":    {lastFailure: t0, failedAttempts: 1, want: t0.Add(time.Minute)},
		"third failure: 100 minutes later": {lastFailure: t0, failedAttempts: 3, want: t0.Add(100 * time.Minute)},
		"many failures: a day later":       {lastFailure: t0, failedAttempts: 50, want: t0.Add(24 * time.Hour)},
		"lost failure time: in the past":   {lastFailure: time.Time{}, failedAttempts: 2, want: time.Time{}.Add(10 * time.Minute)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NextAttempt(tc.lastFailure, tc.failedAttempts); !got.Equal(tc.want) {
				t.Errorf("NextAttempt(%v, %d) = %v, want %v", tc.lastFailure, tc.failedAttempts, got, tc.want)
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
