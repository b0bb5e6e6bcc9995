package acme

import (
	"context"
	"sync"
	"time"
)

// A reconciler talks to an ACME server with a worker that serves every tenant. Two bounds keep
// one slow or hostile server from holding those workers: a deadline on the ACME requests of one
// reconcile (WithReconcileDeadline) and a number of reconciles that may talk to one issuer at
// once (Gate). Both are the caller's to apply; the package's own per-request timeout
// (RequestTimeout) and body cap (MaxResponseBytes) hold regardless.

// RequestTimeout bounds each request of the package's HTTP client, its body read included.
const RequestTimeout = 30 * time.Second

// ReconcileDeadline bounds the ACME requests of one reconcile. A step against a working CA
// makes one to three requests of well under a second each; a reconcile past this is stuck on a
// server that answers slowly, and is better requeued than left to hold a worker.
const ReconcileDeadline = 45 * time.Second

// WithReconcileDeadline returns ctx bounded by ReconcileDeadline, or by ctx's own deadline when
// that is sooner.
func WithReconcileDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, ReconcileDeadline)
}

// RoomForRequest reports whether ctx, at now, leaves a request its whole RequestTimeout: a
// request that makes something at the CA (a new order) is started only then (finish.go).
func RoomForRequest(ctx context.Context, now time.Time) bool {
	deadline, ok := ctx.Deadline()
	return !ok || deadline.Sub(now) >= RequestTimeout
}

// GateRetry is how long to wait before trying a full Gate again: a reconcile that found no
// slot requeues after it.
const GateRetry = 2 * time.Second

// Gate bounds how many holders use one key (an issuer: "Issuer/<namespace>/<name>") at a time,
// so that one issuer's slow server holds at most PerKey of the manager's workers. It never
// waits: TryAcquire says no at once and the caller requeues (GateRetry).
//
// TryAcquireFor is fair: a holder refused while the key is full is queued, and a freed slot goes
// to the longest-waiting holder that asks again, not to whoever asks first. Without it, a holder
// that fails and is requeued at once (an error's rate limiter starts at milliseconds) takes its
// slot back before any waiter, polling every GateRetry, asks. A waiter that has not asked for
// gateWaiterExpiry leaves the queue. A key's entry lives only while it is held or waited for.
// The zero Gate with PerKey 0 refuses nothing.
type Gate struct {
	// PerKey is the most holders of one key at once; 0 means no bound.
	PerKey int

	mu   sync.Mutex
	keys map[string]*gateKey
	now  func() time.Time // tests
}

type gateKey struct {
	held    int
	waiting []gateWaiter // oldest first
}

type gateWaiter struct {
	holder   string
	lastSeen time.Time
}

// gateWaiterExpiry is how long a queued holder keeps its place without asking again: a few
// GateRetry periods, so a Certificate that was deleted or no longer needs the CA stops holding
// others back.
const gateWaiterExpiry = 3 * GateRetry

// TryAcquire takes a slot of key for an anonymous holder, which is never queued: it gets a slot
// only when more slots are free than holders wait. Prefer TryAcquireFor.
func (g *Gate) TryAcquire(key string) (release func(), ok bool) {
	return g.TryAcquireFor(key, "")
}

// TryAcquireFor takes a slot of key for holder (a Certificate: "<namespace>/<name>"). When ok,
// call release once done (calling it again does nothing); when not, every slot is taken or
// promised to holders that waited longer, and holder keeps its place in the queue as long as it
// asks again within a few GateRetry periods.
func (g *Gate) TryAcquireFor(key, holder string) (release func(), ok bool) {
	if g == nil || g.PerKey <= 0 {
		return func() {}, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if g.now != nil {
		now = g.now()
	}
	if g.keys == nil {
		g.keys = map[string]*gateKey{}
	}
	state := g.keys[key]
	if state == nil {
		state = &gateKey{}
		g.keys[key] = state
	}
	// Forget waiters that stopped asking; find holder's place.
	position := -1
	kept := state.waiting[:0]
	for _, waiter := range state.waiting {
		if waiter.holder == holder && holder != "" {
			waiter.lastSeen = now
			position = len(kept)
		} else if now.Sub(waiter.lastSeen) > gateWaiterExpiry {
			continue
		}
		kept = append(kept, waiter)
	}
	state.waiting = kept
	free := g.PerKey - state.held
	switch {
	case position >= 0 && position < free:
		state.waiting = append(state.waiting[:position], state.waiting[position+1:]...)
	case position < 0 && free > len(state.waiting):
	default:
		if position < 0 && holder != "" {
			state.waiting = append(state.waiting, gateWaiter{holder: holder, lastSeen: now})
		}
		g.forgetIdle(key, state)
		return nil, false
	}
	state.held++
	var once sync.Once
	return func() { once.Do(func() { g.release(key) }) }, true
}

func (g *Gate) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	state := g.keys[key]
	if state == nil {
		return
	}
	state.held--
	g.forgetIdle(key, state)
}

func (g *Gate) forgetIdle(key string, state *gateKey) {
	if state.held <= 0 && len(state.waiting) == 0 {
		delete(g.keys, key)
	}
}

// Held returns how many slots of key are taken.
func (g *Gate) Held(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if state := g.keys[key]; state != nil {
		return state.held
	}
	return 0
}

// Waiting returns how many holders are queued for key.
func (g *Gate) Waiting(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if state := g.keys[key]; state != nil {
		return len(state.waiting)
	}
	return 0
}

// Keys returns how many keys are held or waited for (the gate's memory).
func (g *Gate) Keys() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.keys)
}
