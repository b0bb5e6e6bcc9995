package budget

import (
	"fmt"
	"sync"
	"time"
)

// Reasons of a refused new order, for the Certificate's Stalled condition.
const (
	// ReasonThrottled: the namespace spent its new-order budget with this ACME account.
	ReasonThrottled = "Throttled"
	// ReasonAccountPaused: the CA answered rateLimited to a request of this account (or of this
	// namespace with it) and no new order goes to it before the pause ends.
	ReasonAccountPaused = "AccountPaused"
)

// DefaultOrdersPerHour is the default new-order budget of one namespace with one ACME account:
// a sixth of Let's Encrypt's 300 new orders per account per 3 hours, so one tenant cannot spend
// the account's orders alone in less than about 6 hours.
const DefaultOrdersPerHour = 50

// Limit is a token bucket: Orders new orders at once, refilled at Orders per Per.
type Limit struct {
	Orders int
	Per    time.Duration
}

// Unlimited reports whether the limit lets every order through (Orders or Per not positive).
func (l Limit) Unlimited() bool { return l.Orders <= 0 || l.Per <= 0 }

// Bucket is what is left of one namespace's budget with one account: Tokens at At.
type Bucket struct {
	Tokens float64
	At     time.Time
}

// full is a bucket that has not been drawn from.
func (l Limit) full(now time.Time) Bucket { return Bucket{Tokens: float64(l.Orders), At: now} }

// refill is b at now: the tokens earned since b.At, at most Orders.
func (l Limit) refill(b Bucket, now time.Time) Bucket {
	if elapsed := now.Sub(b.At); elapsed > 0 {
		b.Tokens = min(float64(l.Orders), b.Tokens+float64(l.Orders)*elapsed.Seconds()/l.Per.Seconds())
		b.At = now
	}
	return b
}

// Input is what Decide reads.
type Input struct {
	Now   time.Time
	Limit Limit
	// Bucket is the namespace's budget with the account as last left (nil: never drawn from).
	Bucket *Bucket
	// AccountPausedUntil and NamespacePausedUntil end the pauses after rateLimited answers
	// (zero: none).
	AccountPausedUntil, NamespacePausedUntil time.Time
}

// Verdict is what Decide concludes.
type Verdict struct {
	// Allowed is set when the order may be created now; Bucket is then the budget after it.
	Allowed bool
	Bucket  Bucket
	// Reason (ReasonAccountPaused, ReasonThrottled) and RetryAt say why not, and until when.
	Reason  string
	RetryAt time.Time
}

// Decide decides whether a namespace may create a new order with an account now: not while the
// account or the namespace pauses after rateLimited, and not beyond the namespace's budget.
// An order refused for a pause takes nothing from the budget.
func Decide(in Input) Verdict {
	paused := in.AccountPausedUntil
	if in.NamespacePausedUntil.After(paused) {
		paused = in.NamespacePausedUntil
	}
	if in.Now.Before(paused) {
		return Verdict{Reason: ReasonAccountPaused, RetryAt: paused}
	}
	if in.Limit.Unlimited() {
		return Verdict{Allowed: true}
	}
	bucket := in.Limit.full(in.Now)
	if in.Bucket != nil {
		bucket = in.Limit.refill(*in.Bucket, in.Now)
	}
	if bucket.Tokens >= 1 {
		bucket.Tokens--
		return Verdict{Allowed: true, Bucket: bucket}
	}
	missing := time.Duration((1 - bucket.Tokens) * float64(in.Limit.Per) / float64(in.Limit.Orders))
	// Whole seconds, rounded up: the condition's retry time is never earlier than the token.
	return Verdict{Reason: ReasonThrottled, Bucket: bucket, RetryAt: in.Now.Add(missing).Truncate(time.Second).Add(time.Second)}
}

// Message says why a verdict refused, for the Certificate's condition.
func (v Verdict) Message(namespace string, limit Limit) string {
	at := v.RetryAt.UTC().Format(time.RFC3339)
	if v.Reason == ReasonThrottled {
		return fmt.Sprintf("Namespace %s created its %d new orders per %s with this ACME account (--namespace-order-budget); next order at %s",
			namespace, limit.Orders, limit.Per, at)
	}
	return fmt.Sprintf("The CA answered rateLimited to this ACME account; no new order goes to it before %s", at)
}

// MaxAccountPause caps how long one rateLimited answer pauses the other namespaces' new orders
// with the account. Some of a CA's limits are per name (Let's Encrypt: 5 certificates per week
// for one set of names, with a Retry-After of days): with no cap, a tenant that asks for one
// set of names six times would stop every tenant's orders for days. The namespace that got the
// answer waits the CA's whole Retry-After.
const MaxAccountPause = 15 * time.Minute

// DefaultPause is the pause after a rateLimited answer without a Retry-After.
const DefaultPause = time.Minute

// PausesFor returns how long the namespace that got a rateLimited answer, and the account's
// other namespaces, stop creating new orders: the CA's Retry-After (DefaultPause without one)
// for the namespace, at most MaxAccountPause for the others.
func PausesFor(retryAfter time.Duration) (namespace, account time.Duration) {
	if retryAfter <= 0 {
		retryAfter = DefaultPause
	}
	return retryAfter, min(retryAfter, MaxAccountPause)
}

// Ledger keeps, per ACME account, the namespaces' budgets and the pauses, for Decide. It lives
// in the manager's memory: a restarted manager starts with full budgets and no namespace pause;
// the account's pause survives where the caller records it (the controller: the issuer's
// status) and gives it back with PauseAccount. Entries that no longer hold anything
// (a full bucket, a pause that ended) are dropped, so memory follows the namespaces that
// ordered recently. Its zero value is unlimited; set Limit before use.
type Ledger struct {
	Limit Limit

	mu              sync.Mutex
	buckets         map[ledgerKey]Bucket
	namespacePauses map[ledgerKey]time.Time
	accountPauses   map[string]time.Time
	// recordedPauses are the account pauses handed to the caller to record (ToRecord), by
	// the caller's key.
	recordedPauses map[string]time.Time
	pruneAt        int
	prunedAt       time.Time
}

type ledgerKey struct{ account, namespace string }

// minPrune is the number of entries below which the ledger does not look for stale ones.
const minPrune = 1024

// pruneEvery is how often a ledger of more than minPrune entries looks for stale ones even
// when it did not grow.
const pruneEvery = 10 * time.Minute

// TakeOrder decides (Decide) whether namespace may create a new order with account at now, and
// takes the order from its budget when it may.
func (l *Ledger) TakeOrder(account, namespace string, now time.Time) Verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := ledgerKey{account, namespace}
	in := Input{Now: now, Limit: l.Limit, AccountPausedUntil: l.accountPauses[account], NamespacePausedUntil: l.namespacePauses[key]}
	if bucket, ok := l.buckets[key]; ok {
		in.Bucket = &bucket
	}
	v := Decide(in)
	if v.Allowed && !l.Limit.Unlimited() {
		if l.buckets == nil {
			l.buckets = map[ledgerKey]Bucket{}
		}
		l.buckets[key] = v.Bucket
	}
	l.prune(now)
	return v
}

// PauseAccount pauses the account's new orders until then, as a rateLimited answer before a
// restart left them (recorded outside the ledger): it only ever lengthens a pause.
func (l *Ledger) PauseAccount(account string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.accountPauses == nil {
		l.namespacePauses, l.accountPauses = map[ledgerKey]time.Time{}, map[string]time.Time{}
	}
	if until.After(l.accountPauses[account]) {
		l.accountPauses[account] = until
	}
}

// RateLimited records a rateLimited answer to a request of namespace with account at now: the
// pauses of PausesFor. It returns when the namespace's pause and the account's pause end.
func (l *Ledger) RateLimited(account, namespace string, retryAfter time.Duration, now time.Time) (namespaceUntil, accountUntil time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	forNamespace, forAccount := PausesFor(retryAfter)
	if l.namespacePauses == nil {
		l.namespacePauses, l.accountPauses = map[ledgerKey]time.Time{}, map[string]time.Time{}
	}
	key := ledgerKey{account, namespace}
	if until := now.Add(forNamespace); until.After(l.namespacePauses[key]) {
		l.namespacePauses[key] = until
	}
	if until := now.Add(forAccount); until.After(l.accountPauses[account]) {
		l.accountPauses[account] = until
	}
	return l.namespacePauses[key], l.accountPauses[account]
}

// AccountPausedUntil is when the account's pause after a rateLimited answer ends (zero: none
// known); a namespace's longer pause is not part of it.
func (l *Ledger) AccountPausedUntil(account string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accountPauses[account]
}

// RecordSlack is how much longer a pause must be than the one last recorded under the same key
// to be recorded again (ToRecord): a pause is written once, and again at most once a minute
// while later answers lengthen it, however many Certificates the CA refuses.
const RecordSlack = time.Minute

// ToRecord reports whether an account pause until then, decided at now, should be recorded
// under key (the caller's durable place for it, such as one issuer): unless a pause recorded
// there still holds and ends within RecordSlack of it. A true answer counts as recorded; the
// caller that fails to record calls Unrecord.
func (l *Ledger) ToRecord(key string, until, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if recorded, ok := l.recordedPauses[key]; ok && now.Before(recorded) && !until.After(recorded.Add(RecordSlack)) {
		return false
	}
	if l.recordedPauses == nil {
		l.recordedPauses = map[string]time.Time{}
	}
	l.recordedPauses[key] = until
	return true
}

// Unrecord forgets what ToRecord counted as recorded under key, so that the next pause is
// recorded again.
func (l *Ledger) Unrecord(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.recordedPauses, key)
}

// Len is the number of entries the ledger holds.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets) + len(l.namespacePauses) + len(l.accountPauses) + len(l.recordedPauses)
}

// prune drops what no longer holds anything, once the ledger doubled since the last prune or
// pruneEvery after it.
func (l *Ledger) prune(now time.Time) {
	size := len(l.buckets) + len(l.namespacePauses) + len(l.accountPauses) + len(l.recordedPauses)
	if size < minPrune || (size < l.pruneAt && now.Sub(l.prunedAt) < pruneEvery) {
		return
	}
	l.prunedAt = now
	for key, bucket := range l.buckets {
		if l.Limit.Unlimited() || l.Limit.refill(bucket, now).Tokens >= float64(l.Limit.Orders) {
			delete(l.buckets, key)
		}
	}
	for key, until := range l.namespacePauses {
		if !now.Before(until) {
			delete(l.namespacePauses, key)
		}
	}
	for account, until := range l.accountPauses {
		if !now.Before(until) {
			delete(l.accountPauses, account)
		}
	}
	for key, until := range l.recordedPauses {
		if !now.Before(until) {
			delete(l.recordedPauses, key)
		}
	}
	l.pruneAt = 2 * (len(l.buckets) + len(l.namespacePauses) + len(l.accountPauses) + len(l.recordedPauses))
}
