package edge

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
	"unsafe"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/acme"
	"golang.org/x/sys/unix"
)

// In passthrough mode the splicers also accept: the listening socket is in every splicer's
// epoll (EPOLLEXCLUSIVE: a new connection wakes one of them), and the splicer that accepts a
// connection reads its ClientHello itself, from the same event loop, then connects to the
// route's upstream and copies, as nginx's stream module does. No goroutine, no registration
// in Go's poller and no hand-off between goroutines is left per connection. The hello is
// framed here (helloFramed) and parsed by parseHello, with crypto/tls's rules. What needs Go's
// path is handed back to it, with the bytes read: acme-tls/1 (answered by crypto/tls) and
// routes whose upstream is a host name (resolved and dialed by Go's dialer).

// padListener marks the epoll events of a listening socket (Pad 0 and 1 are a flow's
// client and upstream sockets).
const padListener = 2

// acceptBatch is the most connections a splicer accepts for one event before it turns to
// its flows again; the listener is level-triggered, so the next round accepts the rest.
const acceptBatch = 64

// helloBuffer is the size of a new ClientHello buffer; a hello is usually 0.3–2 KiB.
const helloBuffer = 4 << 10

// acceptor is a listening socket served by the splicers. As a net.Listener it only waits for
// Close (connSet.serve's accept loop then ends); connections handed back to Go go straight to
// the passthrough's workers.
type acceptor struct {
	p     *passthrough
	fd    int // a duplicate of the listener's socket, outside Go's poller
	addr  net.Addr
	total prometheus.Counter // the listener's connection metrics (countingListener)
	open  prometheus.Gauge
	done  chan struct{}

	mu       sync.Mutex // held while accepting; guards closed, slots and backoff
	closed   bool
	slots    map[*splicer]int32
	backoff  time.Duration
	splicers []*splicer
}

// acceptedFlow is what a flow the splicer accepted carries besides the splice.
type acceptedFlow struct {
	acceptor *acceptor
	started  time.Time
	remote   netip.AddrPort
	hello    []byte // what was read of the ClientHello
	dialed   time.Time
	sni      string
	upstream string // the route's, once routed
	ok       bool   // connected: an access log line at the end
	replayed int64
}

// newAcceptor moves listener (a TCP listener, possibly under the metrics' countingListener)
// to the splicers and returns the net.Listener that stands for it; nil when it cannot (not
// TCP, no splicer): the caller then accepts with Go.
func newAcceptor(p *passthrough, listener net.Listener) net.Listener {
	a := &acceptor{p: p, addr: listener.Addr(), done: make(chan struct{}), slots: map[*splicer]int32{}}
	inner := listener
	if counting, ok := listener.(*countingListener); ok {
		a.total, a.open, inner = counting.total, counting.open, counting.Listener
	}
	tcp, ok := inner.(*net.TCPListener)
	if !ok || a.total == nil {
		return nil
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	a.fd = -1
	_ = raw.Control(func(fd uintptr) {
		if dup, err := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); err == nil {
			a.fd = dup
		}
	})
	if a.fd < 0 {
		return nil
	}
	// Accepted sockets inherit these: no setsockopt per connection. The duplicate shares the
	// original's non-blocking mode.
	_ = unix.SetsockoptInt(a.fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = unix.SetsockoptInt(a.fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	if _, err := nextSplicer(); err != nil {
		_ = unix.Close(a.fd)
		return nil
	}
	a.splicers = splicers.all
	a.mu.Lock()
	for _, s := range a.splicers {
		if err := a.register(s); err != nil {
			a.closeLocked()
			a.mu.Unlock()
			return nil
		}
	}
	a.mu.Unlock()
	// The duplicate keeps the socket open; the original leaves Go's poller.
	_ = tcp.Close()
	return a
}

// register adds the listening socket to s's epoll; with a.mu held.
func (a *acceptor) register(s *splicer) error {
	s.mu.Lock()
	slot := int32(-1)
	for i, other := range s.acceptors {
		if other == nil {
			slot = int32(i)
			break
		}
	}
	if slot < 0 {
		slot = int32(len(s.acceptors))
		s.acceptors = append(s.acceptors, nil)
	}
	s.acceptors[slot] = a
	s.mu.Unlock()
	event := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: slot, Pad: padListener}
	err := epollCtl(s.epfd, unix.EPOLL_CTL_ADD, a.fd, &event)
	if errors.Is(err, unix.EINVAL) { // a kernel before 4.5: every splicer wakes
		event.Events = unix.EPOLLIN
		err = epollCtl(s.epfd, unix.EPOLL_CTL_ADD, a.fd, &event)
	}
	if err != nil {
		a.unregisterSlot(s, slot)
		return os.NewSyscallError("epoll_ctl", err)
	}
	a.slots[s] = slot
	return nil
}

func (a *acceptor) unregisterSlot(s *splicer, slot int32) {
	s.mu.Lock()
	s.acceptors[slot] = nil
	s.mu.Unlock()
}

// Accept waits until the acceptor is closed.
func (a *acceptor) Accept() (net.Conn, error) {
	<-a.done
	return nil, net.ErrClosed
}

func (a *acceptor) Addr() net.Addr { return a.addr }

// Close stops accepting: the socket leaves every splicer's epoll and is closed, after the
// accepts in progress.
func (a *acceptor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		a.closeLocked()
	}
	return nil
}

func (a *acceptor) closeLocked() {
	a.closed = true
	for s, slot := range a.slots {
		_ = epollCtl(s.epfd, unix.EPOLL_CTL_DEL, a.fd, nil)
		a.unregisterSlot(s, slot)
		delete(a.slots, s)
	}
	_ = unix.Close(a.fd)
	close(a.done)
}

// accept takes the new connections of the acceptor in slot, on s's goroutine.
func (s *splicer) accept(slot int32) {
	s.mu.Lock()
	var a *acceptor
	if int(slot) < len(s.acceptors) {
		a = s.acceptors[slot]
	}
	s.mu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	var sockaddr unix.RawSockaddrAny
	for range acceptBatch {
		fd, err := accept4Nonblock(a.fd, &sockaddr)
		switch {
		case err == nil:
			a.backoff = 0
			a.start(s, fd, addrPort(&sockaddr))
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR, err == unix.ECONNABORTED, err == unix.EPERM, err == unix.EPROTO:
		default: // out of descriptors or memory: stop accepting on s for a while
			a.pause(s, err)
			return
		}
	}
}

// pause takes the listening socket out of s's epoll and puts it back after a backoff, as
// connSet.serve waits after a temporary error of Go's accept; with a.mu held.
func (a *acceptor) pause(s *splicer, err error) {
	a.backoff = min(max(2*a.backoff, 5*time.Millisecond), time.Second)
	a.p.log.Info("Failed to accept a connection", "error", err.Error(), "retryIn", a.backoff.String())
	slot, ok := a.slots[s]
	if !ok {
		return
	}
	_ = epollCtl(s.epfd, unix.EPOLL_CTL_DEL, a.fd, nil)
	a.unregisterSlot(s, slot)
	delete(a.slots, s)
	time.AfterFunc(a.backoff, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if !a.closed {
			if err := a.register(s); err != nil {
				a.p.log.Info("Failed to accept connections again", "error", err.Error())
			}
		}
	})
}

// start begins a flow for an accepted connection: it reads the ClientHello first.
func (a *acceptor) start(s *splicer, fd int, remote netip.AddrPort) {
	a.total.Inc()
	a.open.Inc()
	now := time.Now()
	f := &flow{s: s, fds: [2]int{fd, -1}, deadline: now.Add(a.p.helloTimeout),
		accepted: &acceptedFlow{acceptor: a, started: now, remote: remote, hello: s.takeHelloBuffer()}}
	f.dirs[0] = direction{src: fd}
	f.dirs[1] = direction{dst: fd}
	if !a.p.conns.trackCloser(f) {
		closeFD(fd)
		a.open.Dec()
		return
	}
	f.helloing = true
	s.takeSlot(f)
	event := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: f.slot}
	if err := epollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &event); err != nil {
		a.p.log.Info("Failed to add a passthrough connection to a splicer", "error", err.Error())
		f.helloing = false
		f.endUnmoved()
		return
	}
	s.wait(f)
}

// end2 ends a flow that moved nothing.
func (f *flow) endUnmoved() {
	for i := range f.dirs {
		f.dirs[i].eof, f.dirs[i].done, f.dirs[i].shut = true, true, true
	}
	f.finish()
}

func (s *splicer) takeHelloBuffer() []byte {
	if n := len(s.hellos); n > 0 {
		buffer := s.hellos[n-1]
		s.hellos[n-1] = nil
		s.hellos = s.hellos[:n-1]
		return buffer
	}
	return make([]byte, 0, helloBuffer)
}

func (s *splicer) putHelloBuffer(buffer []byte) {
	if cap(buffer) == helloBuffer && len(s.hellos) < 256 {
		s.hellos = append(s.hellos, buffer[:0])
	}
}

// readHello reads the client's socket until the ClientHello is whole or the socket has
// nothing more (a read returned EAGAIN or less than it asked for), then routes the flow.
func (f *flow) readHello() {
	af := f.accepted
	d := &f.dirs[0]
	for {
		if len(af.hello) == cap(af.hello) {
			if cap(af.hello) >= maxHelloBytes {
				f.failHello(errors.New("ClientHello too large"))
				return
			}
			grown := make([]byte, len(af.hello), min(2*cap(af.hello), maxHelloBytes))
			copy(grown, af.hello)
			f.s.putHelloBuffer(af.hello)
			af.hello = grown
		}
		space := af.hello[len(af.hello):cap(af.hello)]
		n, err := readNonblock(f.fds[0], space)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			d.readable = false
			return
		case err != nil:
			f.failHello(os.NewSyscallError("read", err))
			return
		case n == 0:
			f.failHello(errors.New("connection closed before a whole ClientHello"))
			return
		}
		af.hello = af.hello[:len(af.hello)+n]
		if n < len(space) && !d.closing {
			// A short read emptied the socket, as in direction.move: what the client sends
			// next brings an event, so the splice reads nothing to see EAGAIN. Once its end
			// was reported, reads go on to it.
			d.readable = false
		}
		if helloFramed(af.hello) {
			f.routeHello()
			return
		}
		if !d.readable {
			return // the rest of the hello brings an event
		}
	}
}

// failHello ends a flow whose ClientHello could not be read.
func (f *flow) failHello(err error) {
	af := f.accepted
	f.helloing = false
	p := af.acceptor.p
	p.metrics.handshake(handshakeFailed)
	p.log.V(1).Info("Failed to read a ClientHello", "remoteAddress", af.remote.String(), "error", err.Error())
	f.stopWaiting()
	f.endUnmoved()
}

// routeHello parses the ClientHello and connects to the route's upstream, or hands the
// connection back to Go, or ends it.
func (f *flow) routeHello() {
	af := f.accepted
	p := af.acceptor.p
	hello, err := parseHello(af.hello)
	if err != nil {
		f.failHello(err)
		return
	}
	if hello.offers(acme.ALPNProto) {
		f.handBack()
		return
	}
	routes := p.routes.current()
	route := routes.match(hello.serverName, "")
	if route == nil {
		f.helloing = false
		p.metrics.handshake(handshakeFailed)
		p.log.V(1).Info("No route for a passthrough connection", "serverName", hello.serverName)
		f.stopWaiting()
		f.endUnmoved()
		return
	}
	address, err := netip.ParseAddrPort(route.Upstream)
	if err != nil { // a host name: Go's dialer resolves it
		f.handBack()
		return
	}
	p.metrics.handshake(handshakeSpliced)
	f.helloing = false
	af.sni, af.upstream = hello.serverName, route.Upstream
	af.replayed = int64(len(af.hello))
	f.prefix = af.hello
	if route.ProxyProtocol {
		header, err := f.proxyHeader()
		if err != nil {
			f.stopWaiting()
			f.endUnmoved()
			return
		}
		f.prefix = append(header, af.hello...)
	}
	f.dialTo = address
	af.dialed = time.Now()
	if err := f.dial(af.dialed.Add(routes.config.Timeouts.withDefaults().Dial.Duration)); err != nil {
		f.stopWaiting()
		f.reportConnect(f.dialError(err))
		f.endUnmoved()
	}
}

// proxyHeader formats the PROXY protocol v2 header of the flow's client connection.
func (f *flow) proxyHeader() ([]byte, error) {
	local, err := unix.Getsockname(f.fds[0])
	if err != nil {
		return nil, err
	}
	var localAddr netip.AddrPort
	switch sa := local.(type) {
	case *unix.SockaddrInet4:
		localAddr = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		localAddr = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(f.accepted.remote), net.TCPAddrFromAddrPort(localAddr)).Format()
}

// dial starts the connect of an accepted flow whose client socket is registered already;
// deadline bounds it. After an error the flow holds no upstream socket.
func (f *flow) dial(deadline time.Time) error {
	s := f.s
	fd, err := connectSocket(f.dialTo)
	if err != nil {
		return err
	}
	event := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: f.slot, Pad: 1}
	f.mu.Lock() // against Close
	f.fds[1], f.dirs[0].dst, f.dirs[1].src = fd, fd, fd
	err = epollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &event)
	f.mu.Unlock()
	if err != nil {
		return os.NewSyscallError("epoll_ctl", err) // finish closes fd
	}
	f.connecting = true
	s.mu.Lock() // the flow is in waiting since it was accepted
	f.deadline = deadline
	s.rearm(deadline)
	s.mu.Unlock()
	return nil
}

// connected reports the connect of an accepted flow, as passthrough.handle does.
func (af *acceptedFlow) connected(f *flow, err error) {
	p := af.acceptor.p
	p.metrics.upstream(ModePassthrough, af.dialed, err)
	if err != nil {
		p.log.Info("Failed to connect to the upstream", "upstream", af.upstream, "serverName", af.sni, "error", err.Error())
		if p.accessLog != nil {
			p.writeAccessLog(af.started, af.remote.String(), af.sni, af.upstream, 0, 0, fasthttp.StatusBadGateway)
		}
		return
	}
	af.ok = true
}

// ended closes the books of an accepted flow once finish closed its sockets.
func (af *acceptedFlow) ended(f *flow) {
	a := af.acceptor
	a.open.Dec()
	f.s.putHelloBuffer(af.hello)
	af.hello, f.prefix = nil, nil
	a.p.conns.untrackCloser(f)
	if af.ok && a.p.accessLog != nil {
		a.p.writeAccessLog(af.started, af.remote.String(), af.sni, af.upstream, f.dirs[1].moved, f.dirs[0].moved+af.replayed, 0)
	}
}

// handBack gives the client's connection to Go's passthrough path (passthrough.handle), with
// what was read of it.
func (f *flow) handBack() {
	af := f.accepted
	a := af.acceptor
	s := f.s
	f.helloing = false
	f.stopWaiting()
	f.ended = true
	fd := f.fds[0]
	f.mu.Lock()
	f.closed = true // Close has nothing left to shut down
	f.fds[0] = -1
	f.mu.Unlock()
	// Out of the epoll before anything else: the registration belongs to the socket, which
	// the duplicate below keeps open.
	_ = epollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	s.freeSlot(f)
	file := os.NewFile(uintptr(fd), "")
	conn, err := net.FileConn(file) // a duplicate, in Go's poller
	_ = file.Close()
	defer a.p.conns.untrackCloser(f) // after the connection is tracked in its place
	if err != nil {
		a.open.Dec()
		a.p.metrics.handshake(handshakeFailed)
		a.p.log.Info("Failed to hand a passthrough connection back", "error", err.Error())
		return
	}
	counted := &countingConn{Conn: &handedConn{Conn: conn, prefix: af.hello}, open: a.open}
	af.hello = nil
	tracked, ok := a.p.conns.track(counted)
	if !ok {
		_ = counted.Close()
		return
	}
	a.p.conns.workers.run(func() {
		if !a.p.handle(tracked) {
			_ = tracked.Close()
		}
	})
}

// addrPort decodes an accepted socket's peer address.
func addrPort(sockaddr *unix.RawSockaddrAny) netip.AddrPort {
	switch sockaddr.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(sockaddr))
		port := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(port[0])<<8|uint16(port[1]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(sockaddr))
		port := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(port[0])<<8|uint16(port[1]))
	}
	return netip.AddrPort{}
}
