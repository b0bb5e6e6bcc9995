package edge

import (
	"testing"
	"time"
)

// SetClientHelloTimeout sets how long servers created from now until the test ends wait for a
// passthrough connection's ClientHello.
func SetClientHelloTimeout(tb testing.TB, timeout time.Duration) {
	previous := clientHelloTimeout
	clientHelloTimeout = timeout
	tb.Cleanup(func() { clientHelloTimeout = previous })
}
