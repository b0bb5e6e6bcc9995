package kube

import "testing"

func TestActivity(t *testing.T) {
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	a := NewActivity()
	if !closed(a.Idle()) {
		t.Fatal("a new Activity is not idle")
	}
	a.Begin()
	idle := a.Idle()
	a.Begin()
	a.End()
	if closed(idle) || closed(a.Idle()) {
		t.Fatal("idle with one piece of work still in progress")
	}
	a.End()
	if !closed(idle) || !closed(a.Idle()) {
		t.Fatal("not idle after every piece of work ended")
	}
	a.Begin()
	if closed(a.Idle()) || !closed(idle) {
		t.Fatal("work that began again must not reopen a channel handed out before, nor leave Idle closed")
	}
	a.End()
}
