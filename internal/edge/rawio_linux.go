package edge

import (
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawIOConn reads and writes a TCP connection with raw non-blocking system calls, waiting in
// Go's poller (syscall.RawConn) when the socket has nothing to read or no room: the same
// calls as the net package's, without Go's system call bookkeeping (entersyscall and
// exitsyscall). A call made with that bookkeeping while every processor was idle wakes Go's
// monitor thread (sysmon), which then polls every 20 µs for a millisecond or more
// (docs/bench-edge.md); the edge's proxied requests read and write at every request.
// Deadlines, Close and addresses are the wrapped connection's.
type rawIOConn struct {
	net.Conn
	raw syscall.RawConn
	// The calls' arguments and results, and the functions RawConn runs (made once: a closure
	// per call would be an allocation).
	readBuffer, writeBuffer []byte
	readN, writeN           int
	readErr, writeErr       error
	readFunc, writeFunc     func(fd uintptr) bool
}

// newRawIOConn wraps conn when it is a TCP connection (under the edge's wrappers), and returns
// it unchanged otherwise.
func newRawIOConn(conn net.Conn) net.Conn {
	tcp, ok := rawConn(conn).(*net.TCPConn)
	if !ok {
		return conn
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return conn
	}
	c := &rawIOConn{Conn: conn, raw: raw}
	c.readFunc = func(fd uintptr) bool {
		for {
			n, err := readNonblock(int(fd), c.readBuffer)
			switch err {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait in the poller
			}
			c.readN, c.readErr = n, err
			return true
		}
	}
	c.writeFunc = func(fd uintptr) bool {
		for len(c.writeBuffer) > 0 {
			n, err := writeNonblock(int(fd), c.writeBuffer)
			switch err {
			case nil:
				c.writeN += n
				c.writeBuffer = c.writeBuffer[n:]
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				c.writeErr = err
				return true
			}
		}
		return true
	}
	return c
}

func (c *rawIOConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.readBuffer, c.readN, c.readErr = p, 0, nil
	err := c.raw.Read(c.readFunc)
	c.readBuffer = nil
	switch {
	case err != nil: // closed, or the deadline passed
		return 0, err
	case c.readErr != nil:
		return 0, c.opError("read", c.readErr)
	case c.readN == 0:
		return 0, io.EOF
	}
	return c.readN, nil
}

func (c *rawIOConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.writeBuffer, c.writeN, c.writeErr = p, 0, nil
	err := c.raw.Write(c.writeFunc)
	c.writeBuffer = nil
	if err == nil && c.writeErr != nil {
		err = c.opError("write", c.writeErr)
	}
	return c.writeN, err
}

func (c *rawIOConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, err)}
}

// NetConn returns the wrapped connection.
func (c *rawIOConn) NetConn() net.Conn { return c.Conn }
