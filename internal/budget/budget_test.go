package budget

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func TestRetry(t *testing.T) {
	backoffEnds := t0.Add(10 * time.Minute)
	tests := map[string]struct {
		in   RetryInput
		want RetryVerdict
	}{
		"no failure": {in: RetryInput{Now: t0, BackoffEnds: backoffEnds}},
		"a validation failed, nothing changed": {
			in:   RetryInput{Now: t0, Attempts: 2, LastFailure: t0.Add(-time.Minute), LastReason: ReasonOrderInvalid, BackoffEnds: backoffEnds},
			want: RetryVerdict{Wait: true},
		},
		"a validation failed, the spec changed: the backoff holds": {
			in:   RetryInput{Now: t0, Attempts: 2, LastFailure: t0.Add(-time.Minute), LastReason: ReasonOrderInvalid, SpecChanged: true, BackoffEnds: backoffEnds},
			want: RetryVerdict{Wait: true, Kept: true},
		},
		"rate limited, the spec changed: the backoff holds": {
			in:   RetryInput{Now: t0, Attempts: 1, LastFailure: t0.Add(-time.Minute), LastReason: ReasonCASlowDown, SpecChanged: true, BackoffEnds: backoffEnds},
			want: RetryVerdict{Wait: true, Kept: true},
		},
		"an accept the CA refused, the spec changed: the backoff holds": {
			in:   RetryInput{Now: t0, Attempts: 1, LastFailure: t0.Add(-time.Minute), LastReason: ReasonAcceptFailed, SpecChanged: true, BackoffEnds: backoffEnds},
			want: RetryVerdict{Wait: true, Kept: true},
		},
		"the CA refused the order as written, the spec changed: retried at once": {
			in: RetryInput{Now: t0, Attempts: 3, LastFailure: t0.Add(-time.Minute), LastReason: "OrderRejected", SpecChanged: true, BackoffEnds: backoffEnds},
		},
		"a failure recorded before reasons were, the spec changed: retried at once": {
			in: RetryInput{Now: t0, Attempts: 1, LastFailure: t0.Add(-time.Minute), SpecChanged: true, BackoffEnds: backoffEnds},
		},
		"the backoff ended": {
			in: RetryInput{Now: backoffEnds, Attempts: 2, LastFailure: t0.Add(-time.Minute), LastReason: ReasonOrderInvalid, BackoffEnds: backoffEnds},
		},
		"a spec change a day after a validation failed forgets it": {
			in:   RetryInput{Now: t0, Attempts: 5, LastFailure: t0.Add(-FailureMemory - time.Second), LastReason: ReasonOrderInvalid, SpecChanged: true, BackoffEnds: t0.Add(time.Hour)},
			want: RetryVerdict{Forget: true},
		},
		"no spec change a day after: the daily backoff holds": {
			in:   RetryInput{Now: t0, Attempts: 5, LastFailure: t0.Add(-FailureMemory - time.Second), LastReason: ReasonOrderInvalid, BackoffEnds: t0.Add(time.Hour)},
			want: RetryVerdict{Wait: true},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Retry(tc.in); got != tc.want {
				t.Errorf("Retry = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	hourly := Limit{Orders: 4, Per: time.Hour}
	tests := map[string]struct {
		in          Input
		wantAllowed bool
		wantReason  string
		wantRetryAt time.Time
		wantTokens  float64
	}{
		"unlimited": {in: Input{Now: t0}, wantAllowed: true},
		"a namespace that never ordered": {
			in: Input{Now: t0, Limit: hourly}, wantAllowed: true, wantTokens: 3,
		},
		"the last token": {
			in: Input{Now: t0, Limit: hourly, Bucket: &Bucket{Tokens: 1, At: t0}}, wantAllowed: true, wantTokens: 0,
		},
		"budget spent: the next token in 15 minutes": {
			in: Input{Now: t0, Limit: hourly, Bucket: &Bucket{Tokens: 0, At: t0}}, wantReason: ReasonThrottled, wantRetryAt: t0.Add(15*time.Minute + time.Second),
		},
		"half a token earned: the rest in 7.5 minutes": {
			in: Input{Now: t0, Limit: hourly, Bucket: &Bucket{Tokens: 0, At: t0.Add(-450 * time.Second)}}, wantReason: ReasonThrottled,
			wantRetryAt: t0.Add(450*time.Second + time.Second), wantTokens: 0.5,
		},
		"refilled after 15 minutes": {
			in: Input{Now: t0, Limit: hourly, Bucket: &Bucket{Tokens: 0, At: t0.Add(-15 * time.Minute)}}, wantAllowed: true, wantTokens: 0,
		},
		"refilled no further than the limit": {
			in: Input{Now: t0, Limit: hourly, Bucket: &Bucket{Tokens: 0, At: t0.Add(-10 * time.Hour)}}, wantAllowed: true, wantTokens: 3,
		},
		"the account paused: nothing taken": {
			in:         Input{Now: t0, Limit: hourly, Bucket: &Bucket{Tokens: 2, At: t0}, AccountPausedUntil: t0.Add(time.Minute)},
			wantReason: ReasonAccountPaused, wantRetryAt: t0.Add(time.Minute),
		},
		"the namespace paused longer than the account": {
			in:         Input{Now: t0, Limit: hourly, AccountPausedUntil: t0.Add(time.Minute), NamespacePausedUntil: t0.Add(time.Hour)},
			wantReason: ReasonAccountPaused, wantRetryAt: t0.Add(time.Hour),
		},
		"the pause ended": {
			in: Input{Now: t0, Limit: hourly, AccountPausedUntil: t0, NamespacePausedUntil: t0.Add(-time.Hour)}, wantAllowed: true, wantTokens: 3,
		},
		"paused while unlimited": {
			in: Input{Now: t0, AccountPausedUntil: t0.Add(time.Second)}, wantReason: ReasonAccountPaused, wantRetryAt: t0.Add(time.Second),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Decide(tc.in)
			if got.Allowed != tc.wantAllowed || got.Reason != tc.wantReason || !got.RetryAt.Equal(tc.wantRetryAt) {
				t.Errorf("Decide = %+v, want allowed %v, reason %q, retry at %v", got, tc.wantAllowed, tc.wantReason, tc.wantRetryAt)
			}
			if !tc.in.Limit.Unlimited() && tc.wantReason != ReasonAccountPaused && got.Bucket.Tokens != tc.wantTokens {
				t.Errorf("tokens left %v, want %v", got.Bucket.Tokens, tc.wantTokens)
			}
		})
	}
}

func TestPausesFor(t *testing.T) {
	tests := map[string]struct {
		retryAfter, namespace, account time.Duration
	}{
		"no Retry-After":       {0, DefaultPause, DefaultPause},
		"a short Retry-After":  {90 * time.Second, 90 * time.Second, 90 * time.Second},
		"a per-name limit":     {34 * time.Hour, 34 * time.Hour, MaxAccountPause},
		"exactly the cap":      {MaxAccountPause, MaxAccountPause, MaxAccountPause},
		"a negative answer":    {-time.Second, DefaultPause, DefaultPause},
		"just above the cap":   {MaxAccountPause + time.Second, MaxAccountPause + time.Second, MaxAccountPause},
		"the longest accepted": {24 * time.Hour, 24 * time.Hour, MaxAccountPause},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			namespace, account := PausesFor(tc.retryAfter)
			if namespace != tc.namespace || account != tc.account {
				t.Errorf("PausesFor(%v) = %v, %v; want %v, %v", tc.retryAfter, namespace, account, tc.namespace, tc.account)
			}
		})
	}
}

// TestLedger: namespaces spend their own budgets with each account; a rateLimited answer pauses
// the namespace for the CA's Retry-After and the account's other namespaces at most
// MaxAccountPause; the clock refills.
func TestLedger(t *testing.T) {
	l := &Ledger{Limit: Limit{Orders: 2, Per: time.Hour}}
	for i := range 2 {
		if v := l.TakeOrder("acct-1", "team-a", t0); !v.Allowed {
			t.Fatalf("order %d of team-a refused: %+v", i+1, v)
		}
	}
	if v := l.TakeOrder("acct-1", "team-a", t0); v.Allowed || v.Reason != ReasonThrottled || !v.RetryAt.Equal(t0.Add(30*time.Minute+time.Second)) {
		t.Errorf("third order of team-a: %+v, want Throttled until 30m1s", v)
	}
	if v := l.TakeOrder("acct-1", "team-b", t0); !v.Allowed {
		t.Errorf("team-b refused after team-a spent its budget: %+v", v)
	}
	if v := l.TakeOrder("acct-2", "team-a", t0); !v.Allowed {
		t.Errorf("team-a refused with another account: %+v", v)
	}
	if v := l.TakeOrder("acct-1", "team-a", t0.Add(30*time.Minute)); !v.Allowed {
		t.Errorf("team-a refused after 30 minutes: %+v", v)
	}

	until, accountUntil := l.RateLimited("acct-1", "team-b", 48*time.Hour, t0)
	if !accountUntil.Equal(t0.Add(MaxAccountPause)) {
		t.Errorf("the account pauses until %v, want %v", accountUntil, t0.Add(MaxAccountPause))
	}
	if !until.Equal(t0.Add(48 * time.Hour)) {
		t.Errorf("team-b paused until %v, want 48h", until)
	}
	if v := l.TakeOrder("acct-1", "team-c", t0.Add(time.Minute)); v.Allowed || v.Reason != ReasonAccountPaused || !v.RetryAt.Equal(t0.Add(MaxAccountPause)) {
		t.Errorf("team-c during the account's pause: %+v, want AccountPaused until %v", v, MaxAccountPause)
	}
	if v := l.TakeOrder("acct-2", "team-c", t0.Add(time.Minute)); !v.Allowed {
		t.Errorf("another account paused too: %+v", v)
	}
	if v := l.TakeOrder("acct-1", "team-c", t0.Add(MaxAccountPause)); !v.Allowed {
		t.Errorf("team-c after the account's pause: %+v", v)
	}
	if v := l.TakeOrder("acct-1", "team-b", t0.Add(MaxAccountPause)); v.Allowed || !v.RetryAt.Equal(t0.Add(48*time.Hour)) {
		t.Errorf("team-b after the account's pause: %+v, want paused until its Retry-After", v)
	}
	// A shorter answer later does not shorten a pause.
	if until, _ := l.RateLimited("acct-1", "team-b", time.Second, t0.Add(time.Hour)); !until.Equal(t0.Add(48 * time.Hour)) {
		t.Errorf("a later short Retry-After moved team-b's pause to %v", until)
	}
}

// TestLedgerForgets: entries that hold nothing any more are dropped, so a manager that saw
// many namespaces once does not keep them.
func TestLedgerForgets(t *testing.T) {
	l := &Ledger{Limit: Limit{Orders: 10, Per: time.Hour}}
	for i := range 3 * minPrune {
		l.TakeOrder("acct", fmt.Sprintf("ns-%d", i), t0)
		l.RateLimited(fmt.Sprintf("acct-%d", i), "ns", time.Minute, t0)
	}
	if n := l.Len(); n < minPrune {
		t.Fatalf("%d entries before their budgets refilled, want all of them kept", n)
	}
	l.TakeOrder("acct", "late", t0.Add(2*time.Hour))
	if n := l.Len(); n != 1 {
		t.Errorf("%d entries after every earlier budget refilled and every pause ended, want 1 (the last order's)", n)
	}
	// An unlimited ledger keeps no budget.
	unlimited := &Ledger{}
	for i := range 10 {
		if v := unlimited.TakeOrder("acct", fmt.Sprintf("ns-%d", i), t0); !v.Allowed {
			t.Fatalf("unlimited ledger refused: %+v", v)
		}
	}
	if n := unlimited.Len(); n != 0 {
		t.Errorf("unlimited ledger holds %d entries", n)
	}
}

// TestLedgerPauseAccount: a pause given back from where it was recorded pauses the account's
// new orders and never shortens one; ToRecord asks for one record per pause, again only when a
// later answer lengthens it by more than RecordSlack or the recorded pause ended.
func TestLedgerPauseAccount(t *testing.T) {
	l := &Ledger{}
	l.PauseAccount("acct-1", t0.Add(10*time.Minute))
	l.PauseAccount("acct-1", t0.Add(time.Minute))
	if v := l.TakeOrder("acct-1", "team-a", t0); v.Allowed || v.Reason != ReasonAccountPaused || !v.RetryAt.Equal(t0.Add(10*time.Minute)) {
		t.Errorf("order during a recorded pause: %+v, want AccountPaused until 10m", v)
	}
	if v := l.TakeOrder("acct-1", "team-a", t0.Add(10*time.Minute)); !v.Allowed {
		t.Errorf("order after the recorded pause: %+v", v)
	}

	_, until := l.RateLimited("acct-1", "team-a", time.Hour, t0)
	if !l.ToRecord("ClusterIssuer/shared", until, t0) {
		t.Fatal("the first pause is not to be recorded")
	}
	for i, at := range []time.Duration{time.Second, 30 * time.Second, time.Minute} {
		_, until := l.RateLimited("acct-1", "team-b", time.Hour, t0.Add(at))
		if l.ToRecord("ClusterIssuer/shared", until, t0.Add(at)) {
			t.Errorf("answer %d, %v later: recorded again", i+2, at)
		}
	}
	if _, until := l.RateLimited("acct-1", "team-b", time.Hour, t0.Add(2*time.Minute)); !l.ToRecord("ClusterIssuer/shared", until, t0.Add(2*time.Minute)) {
		t.Errorf("a pause 2 minutes longer is not recorded")
	}
	if !l.ToRecord("ClusterIssuer/other", until, t0) {
		t.Errorf("another key is not recorded")
	}
	later := t0.Add(time.Hour)
	if !l.ToRecord("ClusterIssuer/shared", later.Add(time.Minute), later) {
		t.Errorf("a pause after the recorded one ended is not recorded")
	}
	l.Unrecord("ClusterIssuer/other")
	if !l.ToRecord("ClusterIssuer/other", until, t0) {
		t.Errorf("a pause not recorded after Unrecord")
	}
}
