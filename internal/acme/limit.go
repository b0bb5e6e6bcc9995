package acme

import (
	"context"
	"sync"
	"time"
)

// A reconciler talks to an ACME server with a worker that serves every tenant. Two bounds keep
// one slow or hostile server from holding those workers: a deadline on the ACME requests of one
// reconcile (WithReconcileDeadline) and a number of reconciles that may talk to one issuer at
// once (Gate). Both are the caller's to apply; the package's own per-request timeout (30 s) and
// body cap (MaxResponseBytes) hold regardless.

// ReconcileDeadline bounds the ACME requests of one reconcile. A step against a working CA
// makes one to three requests of well under a second each; a reconcile past this is stuck on a
// server that answers slowly, and is better requeued than left to hold a worker.
const ReconcileDeadline = 45 * time.Second

// WithReconcileDeadline returns ctx bounded by ReconcileDeadline, or by ctx's own deadline when
// that is sooner.
func WithReconcileDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, ReconcileDeadline)
}

// GateRetry is how long to wait before trying a full Gate again: a reconcile that found no
// slot requeues after it.
const GateRetry = 2 * time.Second

// Gate bounds how many holders use one key (an issuer: "Issuer/<namespace>/<name>") at a time,
// so that one issuer's slow server holds at most PerKey of the manager's workers. It never
// waits: TryAcquire says no at once and the caller requeues (GateRetry). A key's entry lives
// only while it is held. The zero Gate with PerKey 0 refuses nothing.
type Gate struct {
	// PerKey is the most holders of one key at once; 0 means no bound.
	PerKey int

	mu   sync.Mutex
	held map[string]int
}

// TryAcquire takes a slot of key. When ok, call release once done (calling it again does
// nothing); when not, every slot is taken.
func (g *Gate) TryAcquire(key string) (release func(), ok bool) {
	if g == nil || g.PerKey <= 0 {
		return func() {}, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held[key] >= g.PerKey {
		return nil, false
	}
	if g.held == nil {
		g.held = map[string]int{}
	}
	g.held[key]++
	var once sync.Once
	return func() { once.Do(func() { g.release(key) }) }, true
}

func (g *Gate) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held[key] <= 1 {
		delete(g.held, key)
		return
	}
	g.held[key]--
}

// Held returns how many slots of key are taken.
func (g *Gate) Held(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held[key]
}

// Keys returns how many keys hold a slot (the gate's memory).
func (g *Gate) Keys() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held)
}
