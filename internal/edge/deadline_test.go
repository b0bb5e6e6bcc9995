package edge

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// deadlineCounter counts the read deadlines set on the connection it wraps.
type deadlineCounter struct {
	net.Conn
	sets atomic.Int32
}

func (c *deadlineCounter) SetReadDeadline(t time.Time) error {
	c.sets.Add(1)
	return c.Conn.SetReadDeadline(t)
}

func lazyPipe(t *testing.T) (conn net.Conn, socket *deadlineCounter, peer net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	socket = &deadlineCounter{Conn: a}
	return newLazyReadDeadlineConn(socket), socket, b
}

// writeAfter writes "x" to peer after delay.
func writeAfter(peer net.Conn, delay time.Duration) {
	go func() {
		time.Sleep(delay)
		_, _ = peer.Write([]byte("x"))
	}()
}

// TestLazyReadDeadlineConn: reads end at the deadline asked for, never at an earlier one left
// on the socket, and never later; keep-alive requests in a row do not move the socket's
// deadline each time.
func TestLazyReadDeadlineConn(t *testing.T) {
	buffer := make([]byte, 8)
	t.Run("a later deadline waits past the socket's", func(t *testing.T) {
		conn, socket, peer := lazyPipe(t)
		_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got := socket.sets.Load(); got != 1 {
			t.Errorf("socket deadlines set: %d, want 1 (the later one is not set)", got)
		}
		writeAfter(peer, 200*time.Millisecond)
		if n, err := conn.Read(buffer); n != 1 || err != nil {
			t.Fatalf("Read: %d, %v; want the byte written after the socket's deadline", n, err)
		}
	})
	t.Run("the deadline asked for ends the read", func(t *testing.T) {
		conn, _, _ := lazyPipe(t)
		started := time.Now()
		_ = conn.SetReadDeadline(started.Add(30 * time.Millisecond))
		_ = conn.SetReadDeadline(started.Add(150 * time.Millisecond))
		_, err := conn.Read(buffer)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read: %v; want a timeout", err)
		}
		if elapsed := time.Since(started); elapsed < 150*time.Millisecond || elapsed > 5*time.Second {
			t.Errorf("Read timed out after %v; want at the 150ms deadline", elapsed)
		}
	})
	t.Run("an earlier deadline is set at once", func(t *testing.T) {
		conn, _, _ := lazyPipe(t)
		started := time.Now()
		_ = conn.SetDeadline(started.Add(time.Minute))
		_ = conn.SetReadDeadline(started.Add(50 * time.Millisecond))
		if _, err := conn.Read(buffer); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read: %v; want a timeout", err)
		}
		if elapsed := time.Since(started); elapsed > 5*time.Second {
			t.Errorf("Read timed out after %v; want at the 50ms deadline", elapsed)
		}
	})
	t.Run("no deadline clears the socket's", func(t *testing.T) {
		conn, _, peer := lazyPipe(t)
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		_ = conn.SetReadDeadline(time.Time{})
		writeAfter(peer, 150*time.Millisecond)
		if n, err := conn.Read(buffer); n != 1 || err != nil {
			t.Fatalf("Read: %d, %v; want the byte (no deadline)", n, err)
		}
	})
	t.Run("a deadline of now interrupts a blocked read", func(t *testing.T) {
		conn, _, _ := lazyPipe(t)
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		go func() {
			time.Sleep(50 * time.Millisecond)
			_ = conn.SetReadDeadline(time.Now())
		}()
		started := time.Now()
		if _, err := conn.Read(buffer); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read: %v; want a timeout", err)
		}
		if elapsed := time.Since(started); elapsed > 5*time.Second {
			t.Errorf("Read ended after %v", elapsed)
		}
	})
	t.Run("requests in a row", func(t *testing.T) {
		conn, socket, peer := lazyPipe(t)
		for range 100 {
			_ = conn.SetReadDeadline(time.Now().Add(idleTimeout)) // waiting for a request
			writeAfter(peer, 0)
			if n, err := conn.Read(buffer); n != 1 || err != nil {
				t.Fatalf("Read: %d, %v", n, err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(readHeaderTimeout)) // reading its header
		}
		if got := socket.sets.Load(); got > 2 {
			t.Errorf("socket deadlines set for 100 requests: %d, want at most 2", got)
		}
	})
}
