package edge

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// connSet is the set of connections a listener accepted, and of the upstream connections that
// belong to them (passthrough splices, upgraded tunnels), so that shutdown can stop accepting,
// wait for them to end until a deadline, and then close what is left.
type connSet struct {
	mu       sync.Mutex
	conns    map[io.Closer]struct{}
	closing  bool
	wg       sync.WaitGroup
	listener net.Listener
	// workers run the handlers (and passthrough splices); stopAccepting ends the idle ones.
	workers workers
}

func newConnSet() *connSet { return &connSet{conns: map[io.Closer]struct{}{}} }

// serve accepts connections on listener until stopAccepting, and runs handle for each on a
// worker (workers.go) with a tracked connection; handle owns it and closes it (then, or later).
func (s *connSet) serve(listener net.Listener, handle func(net.Conn)) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = listener.Close()
		return nil
	}
	s.listener = listener
	s.mu.Unlock()
	var backoff time.Duration
	for {
		conn, err := listener.Accept()
		if err != nil {
			if s.isClosing() {
				return nil
			}
			if isTimeout(err) { // temporary: too many open files and the like
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		tracked, ok := s.track(conn)
		if !ok {
			_ = conn.Close()
			continue
		}
		s.workers.run(func() { handle(tracked) })
	}
}

func (s *connSet) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// track adds conn to the set; the returned connection removes it when closed (once, whoever
// closes it). It returns false once shutdown has begun.
func (s *connSet) track(conn net.Conn) (net.Conn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, false
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	return &trackedConn{Conn: conn, set: s}, true
}

// trackCloser adds c, which calls untrackCloser once it has ended (a passthrough flow).
func (s *connSet) trackCloser(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *connSet) untrackCloser(c io.Closer) { s.untrack(c) }

func (s *connSet) untrack(conn io.Closer) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
	s.wg.Done()
}

// stopAccepting closes the listener; tracked connections stay open.
func (s *connSet) stopAccepting() {
	s.mu.Lock()
	s.closing = true
	listener := s.listener
	s.mu.Unlock()
	// Outside mu: a splicer's listener (splicer_accept_linux.go) waits for the accepts in
	// progress, which track their connections.
	if listener != nil {
		_ = listener.Close()
	}
	s.workers.stop()
}

// drain stops accepting and waits until every tracked connection has closed or ctx is done;
// then it closes the rest and returns ctx's error.
func (s *connSet) drain(ctx context.Context) error {
	s.stopAccepting()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.closeAll()
		<-done
		return ctx.Err()
	}
}

// closeAll stops accepting and closes every tracked connection.
func (s *connSet) closeAll() {
	s.stopAccepting()
	s.mu.Lock()
	defer s.mu.Unlock()
	for conn := range s.conns {
		_ = conn.Close()
	}
}

// trackedConn leaves its set when closed.
type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.detach()
	return err
}

// detach takes the connection out of its set without closing it: something tracked in its
// place (a passthrough flow) owns it now.
func (c *trackedConn) detach() { c.once.Do(func() { c.set.untrack(c.Conn) }) }

// NetConn returns the wrapped connection, so that a splice can reach the TCP socket.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

// rawConn unwraps the edge's connection wrappers (metrics, tracking) down to the socket, so
// that io.Copy between two TCP connections can use the kernel's splice.
func rawConn(conn net.Conn) net.Conn {
	for {
		wrapped, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			return conn
		}
		next := wrapped.NetConn()
		if next == conn { // a wrapper that cannot be bypassed yet (handedConn)
			return conn
		}
		conn = next
	}
}

// connListener is a net.Listener fed with connections that the edge accepted and handshook
// itself; it hands them to a server (fasthttp for HTTP/1.1, net/http for HTTP/2).
type connListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands conn to the server; false when the listener is closed (the caller closes conn).
func (l *connListener) push(conn net.Conn) bool {
	select {
	case l.conns <- conn:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case conn := <-l.conns:
		return conn, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
