package edge

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// lazyReadDeadlineConn keeps read deadlines as asked, but moves the socket's only when it must:
// fasthttp sets two read deadlines per keep-alive request (the idle timeout while it waits for
// the next request, the header timeout once its first byte is in), and each one set on the
// socket is a runtime timer update. A deadline asked for later than the one set on the socket
// leaves the socket's as it is; when that earlier one passes during a read, the read is
// resumed under the deadline asked for, which ends it only when that one has passed too. A
// deadline asked for earlier than the socket's, or none, is set at once. So a connection
// that serves request after request moves its socket's deadline about once per header
// timeout, not twice per request.
type lazyReadDeadlineConn struct {
	net.Conn
	mu sync.Mutex
	// want is the read deadline asked for, armed the one set on Conn (zero: none).
	want, armed time.Time
}

func newLazyReadDeadlineConn(conn net.Conn) net.Conn { return &lazyReadDeadlineConn{Conn: conn} }

func (c *lazyReadDeadlineConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || !c.resume() {
			return n, err
		}
	}
}

// resume sets the socket's read deadline to the one asked for when the socket's has passed
// before it; false when the one asked for has passed (or there is none), and the read ends.
func (c *lazyReadDeadlineConn) resume() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.want.IsZero() || !time.Now().Before(c.want) || c.want.Equal(c.armed) {
		return false
	}
	c.armed = c.want
	return c.Conn.SetReadDeadline(c.want) == nil
}

func (c *lazyReadDeadlineConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setReadDeadline(t)
}

func (c *lazyReadDeadlineConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.setReadDeadline(t)
}

func (c *lazyReadDeadlineConn) setReadDeadline(t time.Time) error {
	c.want = t
	if t.IsZero() && c.armed.IsZero() || !t.IsZero() && !c.armed.IsZero() && !c.armed.After(t) {
		return nil // nothing to clear, or the socket's deadline comes first
	}
	c.armed = t
	return c.Conn.SetReadDeadline(t)
}

// NetConn returns the wrapped connection.
func (c *lazyReadDeadlineConn) NetConn() net.Conn { return c.Conn }
