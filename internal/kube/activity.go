package kube

import "sync"

// Activity counts work in progress (reconciles of an issuance controller, say), so that work
// that can wait (writing Events) waits for none to be. Its zero value is not ready: use
// NewActivity.
type Activity struct {
	mu     sync.Mutex
	active int
	// idle is closed while nothing is active, and replaced by an open channel when something
	// begins.
	idle chan struct{}
}

// NewActivity returns an Activity with nothing in progress.
func NewActivity() *Activity {
	idle := make(chan struct{})
	close(idle)
	return &Activity{idle: idle}
}

// Begin notes that a piece of work started; End must follow.
func (a *Activity) Begin() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.active == 0 {
		a.idle = make(chan struct{})
	}
	a.active++
}

// End notes that a piece of work Begin noted has ended.
func (a *Activity) End() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.active--
	if a.active == 0 {
		close(a.idle)
	}
}

// Idle returns a channel that is closed once no work is in progress (at once when none is).
func (a *Activity) Idle() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.idle
}
