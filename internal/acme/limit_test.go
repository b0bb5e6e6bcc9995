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
