package acme

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	gate := &Gate{PerKey: 2}
	first, ok1 := gate.TryAcquire("Issuer/a/slow")
	second, ok2 := gate.TryAcquire("Issuer/a/slow")
	_, ok3 := gate.TryAcquire("Issuer/a/slow")
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("three acquisitions of a key with 2 slots: %v %v %v, want true true false", ok1, ok2, ok3)
	}
	other, ok := gate.TryAcquire("ClusterIssuer//shared")
	if !ok {
		t.Fatal("another key is refused while the first is full")
	}
	first()
	first() // a second release of the same slot does nothing
	if got := gate.Held("Issuer/a/slow"); got != 1 {
		t.Errorf("Held after one release (twice) = %d, want 1", got)
	}
	second()
	other()
	if got := gate.Keys(); got != 0 {
		t.Errorf("Keys after every release = %d, want 0 (no memory per key)", got)
	}
}

func TestGateConcurrent(t *testing.T) {
	gate := &Gate{PerKey: 3}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		holding int
		most    int
	)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				release, ok := gate.TryAcquire("k")
				if !ok {
					continue
				}
				mu.Lock()
				holding++
				most = max(most, holding)
				mu.Unlock()
				mu.Lock()
				holding--
				mu.Unlock()
				release()
			}
		}()
	}
	wg.Wait()
	if most > 3 {
		t.Errorf("%d holders at once, want at most 3", most)
	}
	if gate.Keys() != 0 {
		t.Errorf("Keys = %d after all released", gate.Keys())
	}
}

func TestGateUnbounded(t *testing.T) {
	var gate *Gate
	release, ok := gate.TryAcquire("k")
	if !ok {
		t.Fatal("a nil Gate refused")
	}
	release()
}

func TestWithReconcileDeadline(t *testing.T) {
	ctx, cancel := WithReconcileDeadline(context.Background())
	defer cancel()
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > ReconcileDeadline {
		t.Errorf("deadline in %v, want at most %v", time.Until(deadline), ReconcileDeadline)
	}
	sooner, cancelSooner := context.WithTimeout(context.Background(), time.Second)
	defer cancelSooner()
	bounded, cancelBounded := WithReconcileDeadline(sooner)
	defer cancelBounded()
	if deadline, _ := bounded.Deadline(); time.Until(deadline) > time.Second {
		t.Errorf("a sooner deadline of the parent was not kept")
	}
}

func TestRoomForRequest(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		deadline time.Duration // from now; 0: none
		want     bool
	}{
		{"no deadline", 0, true},
		{"a whole reconcile left", ReconcileDeadline, true},
		{"exactly one request left", RequestTimeout, true},
		{"less than one request left", RequestTimeout - time.Millisecond, false},
		{"past the deadline", -time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.deadline != 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, now.Add(tc.deadline))
				defer cancel()
			}
			if got := RoomForRequest(ctx, now); got != tc.want {
				t.Errorf("RoomForRequest = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestGateFairness: a holder that releases and asks again at once does not take its slot back
// before the holders that waited; a waiter that stops asking leaves the queue.
func TestGateFairness(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	gate := &Gate{PerKey: 2, now: func() time.Time { return now }}
	const key = "Issuer/tenant/slow"
	slow0, ok0 := gate.TryAcquireFor(key, "tenant/slow-0")
	_, ok1 := gate.TryAcquireFor(key, "tenant/slow-1")
	if !ok0 || !ok1 {
		t.Fatal("the first two holders were refused")
	}
	for _, holder := range []string{"tenant/slow-2", "tenant/slow-3"} {
		if _, ok := gate.TryAcquireFor(key, holder); ok {
			t.Fatalf("%s got a slot of a full key", holder)
		}
	}
	if got := gate.Waiting(key); got != 2 {
		t.Fatalf("Waiting = %d, want 2", got)
	}
	// slow-0 times out, releases and is requeued at once: it waits behind slow-2 and slow-3.
	slow0()
	if _, ok := gate.TryAcquireFor(key, "tenant/slow-0"); ok {
		t.Fatal("the holder that just released took its slot back before the waiters")
	}
	if _, ok := gate.TryAcquire(key); ok {
		t.Fatal("an anonymous holder took a slot promised to a waiter")
	}
	now = now.Add(GateRetry)
	if _, ok := gate.TryAcquireFor(key, "tenant/slow-3"); ok {
		t.Fatal("slow-3 got the one free slot before slow-2, which waited longer")
	}
	slow2, ok := gate.TryAcquireFor(key, "tenant/slow-2")
	if !ok {
		t.Fatal("the longest waiter did not get the free slot")
	}
	slow2()
	// slow-3 stops asking (its Certificate was deleted): after the expiry slow-0 is next.
	now = now.Add(gateWaiterExpiry + time.Second)
	slow0, ok = gate.TryAcquireFor(key, "tenant/slow-0")
	if !ok {
		t.Fatal("slow-0 did not get the slot after the silent waiter before it expired")
	}
	slow0()
	if got := gate.Waiting(key); got != 0 {
		t.Errorf("Waiting = %d after the queue emptied, want 0", got)
	}
}
