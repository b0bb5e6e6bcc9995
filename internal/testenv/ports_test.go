package testenv

import (
	"net"
	"testing"
)

// TestListenFree: ports for other processes come from below the ephemeral range, where no
// outgoing connection can take them, and are distinct while held.
func TestListenFree(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 20 {
		listener, err := ListenFree()
		if err != nil {
			t.Fatal(err)
		}
		defer listener.Close()
		port := listener.Addr().(*net.TCPAddr).Port
		if port >= low || port < 1024 {
			t.Errorf("port %d, want one in [1024, %d)", port, low)
		}
		if seen[port] {
			t.Errorf("port %d handed out twice while held", port)
		}
		seen[port] = true
	}
}
