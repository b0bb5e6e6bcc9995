package edge

import (
	"slices"
	"sync"
	"time"
)

// Bounds of the idle workers: at most maxIdleWorkers wait for work, and one that has waited
// longer than workerIdleTime ends when the next piece of work arrives.
const (
	maxIdleWorkers = 512
	workerIdleTime = 10 * time.Second
)

// workers runs functions (a connection's handler, a splice's second direction) on goroutines
// that, once their function returns, wait for the next one instead of ending. A goroutine
// starts with a small stack, and a TLS handshake or a ClientHello parse grows it: with a new
// goroutine per connection, copying the growing stack was 5–7 % of the CPU time of a
// passthrough connection (docs/bench-edge.md). A reused goroutine keeps the stack it grew,
// until the garbage collector shrinks an idle one. The most recently parked worker gets the
// next function, so few workers stay busy and the rest expire.
type workers struct {
	mu      sync.Mutex
	idle    []*worker // the most recently parked last
	stopped bool
}

type worker struct {
	work   chan func() // closed: end
	parked time.Time
}

// run calls f on an idle worker, or on a new one.
func (w *workers) run(f func()) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		next := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		var expired *worker
		if len(w.idle) > 0 && time.Since(w.idle[0].parked) > workerIdleTime {
			expired = w.idle[0]
			w.idle = slices.Delete(w.idle, 0, 1)
		}
		w.mu.Unlock()
		if expired != nil {
			close(expired.work)
		}
		next.work <- f // buffered: never blocks
		return
	}
	w.mu.Unlock()
	go w.loop(&worker{work: make(chan func(), 1)}, f)
}

func (w *workers) loop(self *worker, f func()) {
	for ok := true; ok; f, ok = <-self.work {
		f()
		if !w.park(self) {
			return
		}
	}
}

// park makes self idle; false when it should end instead.
func (w *workers) park(self *worker) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || len(w.idle) >= maxIdleWorkers {
		return false
	}
	self.parked = time.Now()
	w.idle = append(w.idle, self)
	return true
}

// stop ends the idle workers; busy ones end when their function returns. Functions run after
// stop still run, each on a goroutine of its own.
func (w *workers) stop() {
	w.mu.Lock()
	idle := w.idle
	w.idle, w.stopped = nil, true
	w.mu.Unlock()
	for _, worker := range idle {
		close(worker.work)
	}
}
