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
//
// A write that ends a request whose reply is read next (awaitReply) also waits for that reply,
// when it is the request's only write: it is made inside RawConn.Read, after the poller forgot
// the socket's earlier readiness and before the peer has any byte of the request to answer,
// so the read that follows reads the reply's first bytes (or the peer's end) instead of first
// seeing EAGAIN, as a read right after the write nearly always did. After an earlier write
// the peer may have answered already (a 401 to the head of an upload), and the readiness that
// answer brought must not be forgotten: such a write does not wait.
type rawIOConn struct {
	net.Conn
	raw syscall.RawConn
	// The calls' arguments and results, and the functions RawConn runs (made once: a closure
	// per call would be an allocation).
	readBuffer, writeBuffer []byte
	readN, writeN           int
	readErr, writeErr       error
	readFunc, writeFunc     func(fd uintptr) bool
	replyFunc               func(fd uintptr) bool
	// replies: made by newRequestConn, the connection carries requests and their replies,
	// one goroutine at a time (a client's connection may be read and written at once, and
	// never uses the fields below); replyNext: the next write ends a request (awaitReply);
	// sent: a write since the last read; written: replyFunc has written all of the request
	// and waits for the reply.
	replies, replyNext, sent, written bool
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
	c.replyFunc = func(fd uintptr) bool {
		if c.written {
			return true // readable: the reply began, or the peer ended
		}
		if !c.writeFunc(fd) || c.writeErr != nil {
			return true // no room for all of it (Write finishes it), or failed
		}
		c.written = true
		return false // wait in the poller until the socket is readable
	}
	return c
}

// newRequestConn is newRawIOConn for a connection that carries requests and their replies,
// one goroutine at a time (an upstream connection): its writes can wait for the reply
// (awaitReply).
func newRequestConn(conn net.Conn) net.Conn {
	wrapped := newRawIOConn(conn)
	if c, ok := wrapped.(*rawIOConn); ok {
		c.replies = true
	}
	return wrapped
}

// awaitReply has the writes until awaitReply(false) wait for the reply once they wrote
// everything; the caller sets it around the write that ends a request, and reads the reply
// next.
func (c *rawIOConn) awaitReply(on bool) { c.replyNext = on }

func (c *rawIOConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.replies {
		c.sent = false
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
	if c.replies {
		if c.replyNext && !c.sent {
			// Whatever ends the wait (the reply, a deadline, Close) the next read sees too;
			// the write succeeded once it wrote everything.
			c.written = false
			_ = c.raw.Read(c.replyFunc)
		}
		c.sent = true
	}
	var err error
	if len(c.writeBuffer) > 0 && c.writeErr == nil {
		err = c.raw.Write(c.writeFunc)
	}
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
