package edge

import (
	"sync"
	"testing"
	"time"
)

// lastIdle waits until w has an idle worker and returns the most recently parked one.
func lastIdle(t *testing.T, w *workers) *worker {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		var last *worker
		if n := len(w.idle); n > 0 {
			last = w.idle[n-1]
		}
		w.mu.Unlock()
		if last != nil {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatal("no worker parked")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWorkersReuseAndStop(t *testing.T) {
	var w workers
	run := func() *worker {
		done := make(chan struct{})
		w.run(func() { close(done) })
		<-done
		return lastIdle(t, &w)
	}

	first := run()
	second := run()
	if first != second {
		t.Fatal("a second function did not run on the idle worker")
	}
	w.mu.Lock()
	idle := len(w.idle)
	w.mu.Unlock()
	if idle != 1 {
		t.Fatalf("%d idle workers after two sequential functions, want 1", idle)
	}

	w.stop()
	select {
	case _, ok := <-first.work:
		if ok {
			t.Fatal("stop sent work to an idle worker")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not end the idle worker")
	}
	// After stop, functions still run, and their goroutines do not park.
	done := make(chan struct{})
	w.run(func() { close(done) })
	<-done
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.idle) != 0 {
		t.Fatalf("%d idle workers after stop", len(w.idle))
	}
}

func TestWorkersExpire(t *testing.T) {
	var w workers
	// Three workers busy at once, then all idle.
	release := make(chan struct{})
	var started sync.WaitGroup
	for range 3 {
		started.Add(1)
		w.run(func() { started.Done(); <-release })
	}
	started.Wait()
	close(release)
	waitIdle := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			w.mu.Lock()
			n := len(w.idle)
			w.mu.Unlock()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d idle workers, want %d", n, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitIdle(3)
	// The longest idle one has waited past workerIdleTime: the next run ends it.
	w.mu.Lock()
	oldest := w.idle[0]
	oldest.parked = time.Now().Add(-2 * workerIdleTime)
	w.mu.Unlock()
	done := make(chan struct{})
	w.run(func() { close(done) })
	<-done
	waitIdle(2)
	if _, ok := <-oldest.work; ok {
		t.Fatal("the expired worker got work")
	}
	w.stop()
}
