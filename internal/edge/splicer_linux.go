package edge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The splicers carry passthrough connections: each is a goroutine with an epoll instance of
// its own (edge-triggered). On a TCP listener they accept the connections themselves and read
// their ClientHellos (splicer_accept_linux.go); otherwise Go's path (passthrough.handle)
// reads the hello and hands the client's socket over. The splicer connects to the upstream
// itself when the route names an IP address (a non-blocking connect in the same epoll, so
// none of the extra system calls and no goroutine of Go's dialer), writes the PROXY header
// and the ClientHello, and then copies bytes socket → buffer → socket with non-blocking reads
// and writes, as nginx's event loop does. There is no goroutine per direction and no read through Go's network
// poller: Go's poller only wakes a splicer when its epoll instance has events, and the
// splicer then works through all of them, for every connection it carries. Sockets that Go
// opened keep their registration in Go's poller (no call to take them out) and are closed
// through their net.Conn once both directions ended, so that the wrappers' Close runs
// (metrics); no descriptor is closed while a splicer may still use its number.

// flowEvents is how many epoll events a splicer takes at a time.
const flowEvents = 128

// splicers are started on first use, one per processor (GOMAXPROCS at that time); flows go
// round-robin.
var splicers struct {
	once sync.Once
	all  []*splicer
	err  error
	next atomic.Uint32
}

func nextSplicer() (*splicer, error) {
	splicers.once.Do(func() {
		for range runtime.GOMAXPROCS(0) {
			s, err := newSplicer()
			if err != nil {
				splicers.err = err
				return
			}
			splicers.all = append(splicers.all, s)
		}
	})
	if splicers.err != nil {
		return nil, splicers.err
	}
	return splicers.all[int(splicers.next.Add(1))%len(splicers.all)], nil
}

type splicer struct {
	epfd int
	file *os.File   // epfd, in Go's poller; its read deadline is the next flow deadline
	mu   sync.Mutex // guards flows, free, acceptors, waiting and armed
	// flows are the connections carried, by slot (an epoll event's Fd); nil slots are in free.
	flows []*flow
	free  []int32
	// acceptors are the listening sockets in this splicer's epoll, by slot (an event's Fd
	// with Pad padListener); nil once closed.
	acceptors []*acceptor
	// waiting are the flows that wait for a ClientHello or an upstream connect, each until
	// its deadline; armed is file's read deadline (zero: none), at or before the earliest.
	waiting []*flow
	armed   time.Time
	// Only the splicer's goroutine uses the fields below.
	events  []unix.EpollEvent
	batch   []*flow  // the flows of one batch of events, by event
	pending []*flow  // flows that used their share of a round and have more to move
	hellos  [][]byte // empty buffers for ClientHellos
	buffers [][]byte // empty copy buffers
}

func newSplicer() (*splicer, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	// Go's poller watches the epoll instance itself (it is readable while it holds events), so
	// a splicer with nothing to do is a parked goroutine, not a thread blocked in epoll_wait.
	file := os.NewFile(uintptr(epfd), "splicer")
	if err := file.SetReadDeadline(time.Time{}); err != nil { // not in Go's poller
		_ = file.Close()
		return nil, err
	}
	raw, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		return nil, err
	}
	s := &splicer{epfd: epfd, file: file, events: make([]unix.EpollEvent, flowEvents)}
	go func() {
		// Read parks the goroutine until the epoll instance is readable whenever run returns
		// false (run never returns true), or until the next dial deadline.
		for {
			if err := raw.Read(s.run); !errors.Is(err, os.ErrDeadlineExceeded) {
				panic(fmt.Sprintf("splicer: waiting for events: %v", err))
			}
			s.expire()
		}
	}()
	return s, nil
}

// expire fails the ClientHello reads and connects whose deadline has passed and arms the
// next deadline.
func (s *splicer) expire() {
	now := time.Now()
	var expired []*flow
	s.mu.Lock()
	kept := s.waiting[:0]
	next := time.Time{}
	for _, f := range s.waiting {
		switch {
		case !f.connecting && !f.helloing:
		case !f.deadline.After(now):
			expired = append(expired, f)
		default:
			kept = append(kept, f)
			if next.IsZero() || f.deadline.Before(next) {
				next = f.deadline
			}
		}
	}
	clear(s.waiting[len(kept):])
	s.waiting = kept
	s.armed = next
	_ = s.file.SetReadDeadline(next)
	s.mu.Unlock()
	for _, f := range expired {
		switch {
		case f.ended:
		case f.helloing:
			f.failHello(os.ErrDeadlineExceeded)
		case f.connecting:
			f.failConnect(os.ErrDeadlineExceeded)
		}
	}
}

// wait adds f to the flows with a deadline (f.deadline), arming it when it is the earliest.
func (s *splicer) wait(f *flow) {
	s.mu.Lock()
	s.waiting = append(s.waiting, f)
	s.rearm(f.deadline)
	s.mu.Unlock()
}

// rearm arms deadline when it is earlier than the armed one; with s.mu held. The armed
// deadline is not moved later when flows stop waiting (expire does that), so that flows
// with the same timeout, arriving in order, arm once.
func (s *splicer) rearm(deadline time.Time) {
	if s.armed.IsZero() || deadline.Before(s.armed) {
		s.armed = deadline
		_ = s.file.SetReadDeadline(deadline)
	}
}

// copyBuffer is the size of the buffer a direction copies through. Bytes are copied through
// user space, as nginx's stream module does, rather than spliced through a pipe: a splice
// leaves the sender's pages referenced in the pipe and then in the receiver's socket until the
// receiver has read them, and over loopback or a veth pair those are the sending process's own
// pages, so that its kernel allocates new ones for each write (docs/bench-edge.md: the upstream
// spent a fifth more CPU per MiB behind the splice). 32 KiB (two TLS records) cost the edge and
// the reader less per MiB than 16 KiB; 64 KiB, a write larger than one loopback packet, cost
// more than either.
const copyBuffer = 32 << 10

// takeBuffer returns an empty buffer; only the splicer's goroutine calls it.
func (s *splicer) takeBuffer() []byte {
	if n := len(s.buffers); n > 0 {
		buffer := s.buffers[n-1]
		s.buffers[n-1] = nil
		s.buffers = s.buffers[:n-1]
		return buffer
	}
	return make([]byte, copyBuffer)
}

// putBuffer keeps a buffer that holds nothing more for the next read.
func (s *splicer) putBuffer(buffer []byte) {
	if buffer != nil && len(s.buffers) < 1024 {
		s.buffers = append(s.buffers, buffer)
	}
}

// run works through the splicer's events until there are none; false makes Go's poller
// wait for the next.
func (s *splicer) run(uintptr) bool {
	for {
		n, err := epollPoll(s.epfd, s.events)
		if err != nil && !errors.Is(err, unix.EINTR) {
			panic(os.NewSyscallError("epoll_wait", err)) // EBADF, EFAULT, EINVAL: a bug
		}
		if n <= 0 && len(s.pending) == 0 {
			return false
		}
		s.batch = s.batch[:0]
		listening := false
		s.mu.Lock()
		for _, event := range s.events[:max(n, 0)] {
			if event.Pad == padListener {
				s.batch = append(s.batch, nil)
				listening = true
				continue
			}
			s.batch = append(s.batch, s.flows[event.Fd])
		}
		s.mu.Unlock()
		for i, event := range s.events[:max(n, 0)] {
			if f := s.batch[i]; f != nil && !f.ended {
				f.ready(event)
			}
			s.batch[i] = nil
		}
		// New connections last: the events of the flows already carried first.
		if listening {
			for _, event := range s.events[:max(n, 0)] {
				if event.Pad == padListener {
					s.accept(event.Fd)
				}
			}
		}
		// Flows that had more than their share: another round each, after everyone's events.
		pending := s.pending
		s.pending = nil
		for _, f := range pending {
			f.queued = false
			if !f.ended {
				f.pump()
			}
		}
		if cap(s.pending) == 0 {
			clear(pending)
			s.pending = pending[:0]
		}
	}
}

// direction is one way of a flow: from src through a buffer to dst.
type direction struct {
	src, dst int
	buffer   []byte // while it holds bytes, or a read is under way
	offset   int    // of the bytes in buffer
	buffered int    // bytes in buffer
	moved    int64  // bytes written to dst
	readable bool   // src had an event since its last EAGAIN or short read
	writable bool   // dst had an event since its last EAGAIN or short write
	closing  bool   // src reported its peer's end (EPOLLRDHUP, EPOLLHUP, EPOLLERR): read to it
	eof      bool   // src ended or failed: nothing more to read
	done     bool   // eof and the buffer written out, or dst failed
	shut     bool   // dst half-closed
}

// flow is one passthrough connection on a splicer.
type flow struct {
	s    *splicer
	slot int32
	// client and upstream are closed by the splicer once both directions are done.
	client, upstream net.Conn
	fds              [2]int
	dirs             [2]direction // client → upstream, upstream → client
	end              func(sent, received int64)
	// A flow that dials its upstream itself (newDialFlow) has no upstream net.Conn: until the
	// connect completes (connecting) nothing moves; then prefix goes to the upstream before
	// any byte from the client. connected gets the connect's result, before end.
	dialTo     netip.AddrPort
	deadline   time.Time // of the connect, or of the ClientHello
	connecting bool
	prefix     []byte
	connected  func(err error)
	// A flow the splicer accepted (splicer_accept_linux.go) has no client net.Conn either: it
	// reads the ClientHello (helloing), then dials.
	accepted *acceptedFlow
	helloing bool
	// mu and closed guard the file descriptors against Close from other goroutines.
	mu     sync.Mutex
	closed bool
	// Only the splicer's goroutine uses these.
	ended  bool
	queued bool
}

// newFlow prepares to splice client and upstream (connected TCP sockets, under the edge's
// wrappers) on a splicer; end gets the bytes sent to the client and received from it, on the
// splicer's goroutine, once both sockets are closed. It returns nil when the sockets cannot
// be handed over (not TCP, no splicer); the caller then keeps them.
func newFlow(client, upstream net.Conn, end func(sent, received int64)) *flow {
	clientFD, ok := socketFD(client)
	if !ok {
		return nil
	}
	upstreamFD, ok := socketFD(upstream)
	if !ok {
		return nil
	}
	s, err := nextSplicer()
	if err != nil {
		return nil
	}
	f := &flow{s: s, client: client, upstream: upstream, fds: [2]int{clientFD, upstreamFD}, end: end}
	f.dirs[0] = direction{src: clientFD, dst: upstreamFD}
	f.dirs[1] = direction{src: upstreamFD, dst: clientFD}
	return f
}

// newDialFlow prepares a flow that connects to upstream itself (start opens the socket and
// starts the connect; the splicer completes it): no net.Conn, and none of the system calls
// Go's dialer adds. connected gets the connect's result (on the splicer's goroutine, or on
// start's when the connect fails at once); end as with newFlow.
func newDialFlow(client net.Conn, upstream netip.AddrPort, prefix []byte, deadline time.Time, connected func(error), end func(sent, received int64)) *flow {
	clientFD, ok := socketFD(client)
	if !ok || !upstream.IsValid() {
		return nil
	}
	s, err := nextSplicer()
	if err != nil {
		return nil
	}
	f := &flow{s: s, client: client, fds: [2]int{clientFD, -1}, end: end,
		dialTo: upstream, deadline: deadline, prefix: prefix, connected: connected}
	f.dirs[0] = direction{src: clientFD}
	f.dirs[1] = direction{dst: clientFD}
	return f
}

// connectSocket opens a non-blocking TCP socket with the options of the edge's other
// sockets (TCP_NODELAY, keep-alive at the kernel's settings) and starts connecting it.
func connectSocket(address netip.AddrPort) (int, error) {
	family := unix.AF_INET6
	if address.Addr().Unmap().Is4() {
		family = unix.AF_INET
	}
	fd, err := socketNonblock(family, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	setsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	setsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	if err := connectNonblock(fd, address); err != nil && err != unix.EINPROGRESS && err != unix.EINTR {
		closeFD(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}

func (f *flow) dialError(err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(f.dialTo), Err: err}
}

// socketFD returns the file descriptor of conn's TCP socket.
func socketFD(conn net.Conn) (int, bool) {
	tcp, ok := rawConn(conn).(*net.TCPConn)
	if !ok {
		return 0, false
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	if err := raw.Control(func(s uintptr) { fd = int(s) }); err != nil || fd < 0 {
		return 0, false
	}
	return fd, true
}

// start hands the flow to its splicer. After an error nothing was started and the caller
// still owns the connections; after nil the splicer owns them and calls end.
// For a flow that dials, an error is the dial's (connected is not called for it).
func (f *flow) start() error {
	s := f.s
	if f.dialTo.IsValid() {
		fd, err := connectSocket(f.dialTo)
		if err != nil {
			return f.dialError(err)
		}
		f.mu.Lock() // against Close
		f.fds[1], f.dirs[0].dst, f.dirs[1].src = fd, fd, fd
		f.mu.Unlock()
		f.connecting = true
	}
	s.takeSlot(f)
	// Edge-triggered: an event when a socket becomes readable or writable (and one now, for
	// what it already is), after which the splicer reads or writes until EAGAIN. f.mu is
	// held across both registrations: once the first is made the splicer may run the flow,
	// and its finish (which takes f.mu to close the sockets) must not close a descriptor that
	// is still to be registered.
	const events = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	event := unix.EpollEvent{Events: events, Fd: f.slot, Pad: 0}
	f.mu.Lock()
	if err := epollCtl(s.epfd, unix.EPOLL_CTL_ADD, f.fds[0], &event); err != nil {
		f.mu.Unlock()
		s.freeSlot(f)
		if f.connecting {
			f.connecting = false
			_ = unix.Close(f.fds[1])
			return f.dialError(os.NewSyscallError("epoll_ctl", err))
		}
		return os.NewSyscallError("epoll_ctl", err)
	}
	event.Pad = 1
	registered := epollCtl(s.epfd, unix.EPOLL_CTL_ADD, f.fds[1], &event) == nil
	f.mu.Unlock()
	if !registered {
		_ = f.Close() // the client's events end the flow, or the dial deadline a connecting one
	}
	if f.dialTo.IsValid() {
		// Only now that the flow is registered may expire fail it. It may have connected (or
		// failed, or even ended) meanwhile: expire drops flows that no longer connect.
		s.wait(f)
	}
	return nil
}

// Close ends the flow from any goroutine: both sockets are shut down, and the splicer, seeing
// both ends, closes them and calls end.
func (f *flow) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		for _, fd := range f.fds {
			if fd >= 0 {
				_ = unix.Shutdown(fd, unix.SHUT_RDWR)
			}
		}
	}
	return nil
}

// ready takes an event of one of the flow's sockets and moves what it allows.
func (f *flow) ready(event unix.EpollEvent) {
	side := event.Pad // 0: the client's socket, 1: the upstream's
	if event.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		f.dirs[side].readable = true // side is the source of direction side
	}
	if event.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		f.dirs[side].closing = true
	}
	if event.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		f.dirs[1-side].writable = true // and the destination of the other
	}
	if f.helloing {
		if side == 0 && f.dirs[0].readable {
			f.readHello()
		}
		return
	}
	if f.connecting {
		if side == 0 {
			return // the client's bytes wait for the upstream
		}
		if event.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			errno, err := unix.GetsockoptInt(f.fds[1], unix.SOL_SOCKET, unix.SO_ERROR)
			if err == nil {
				err = unix.Errno(errno)
				if errno == 0 {
					err = unix.ECONNRESET
				}
			}
			f.failConnect(os.NewSyscallError("connect", err))
			return
		}
		if event.Events&unix.EPOLLOUT == 0 {
			return
		}
		f.connectDone()
		f.reportConnect(nil)
	}
	f.pump()
}

// reportConnect passes the connect's result on.
func (f *flow) reportConnect(err error) {
	if f.accepted != nil {
		f.accepted.connected(f, err)
		return
	}
	f.connected(err)
}

// connectDone takes the flow out of its splicer's waiting flows.
func (f *flow) connectDone() {
	f.connecting = false
	f.stopWaiting()
}

func (f *flow) stopWaiting() {
	s := f.s
	s.mu.Lock()
	for i := len(s.waiting) - 1; i >= 0; i-- {
		if s.waiting[i] == f {
			s.waiting = slices.Delete(s.waiting, i, i+1)
			break
		}
	}
	s.mu.Unlock()
}

// failConnect ends a flow whose upstream could not be connected.
func (f *flow) failConnect(err error) {
	f.connectDone()
	f.reportConnect(f.dialError(err))
	for i := range f.dirs {
		f.dirs[i].eof, f.dirs[i].done, f.dirs[i].shut = true, true, true
	}
	f.finish()
}

// pump moves both directions as far as they go, each at most one spliceChunk, then ends the
// flow when both are done.
func (f *flow) pump() {
	more := false
	if len(f.prefix) > 0 && f.dirs[0].writable && !f.dirs[0].done {
		f.writePrefix()
	}
	for i := range f.dirs {
		d := &f.dirs[i]
		if i == 0 && len(f.prefix) > 0 && !d.done {
			continue // the client's bytes follow the prefix
		}
		if !d.done && d.move(f.s) {
			more = true
		}
		if d.done && !d.shut && !f.dirs[1-i].done {
			// The first direction to end half-closes its destination; when the second ends,
			// closing both sends the same FIN without a shutdown call.
			shutdownSocket(d.dst, unix.SHUT_WR)
			d.shut = true
		}
	}
	if f.dirs[0].done && f.dirs[1].done {
		f.finish()
		return
	}
	if more && !f.queued {
		f.queued = true
		f.s.pending = append(f.s.pending, f)
	}
}

// writePrefix writes what is left of the prefix to the upstream, as far as it goes.
func (f *flow) writePrefix() {
	d := &f.dirs[0]
	for len(f.prefix) > 0 {
		n, err := writeNonblock(d.dst, f.prefix)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			d.writable = false
			return
		case err != nil:
			d.eof, d.done = true, true
			return
		}
		f.prefix = f.prefix[n:]
	}
	f.prefix = nil
}

// turnBytes is the most one direction moves in a turn before the other flows' events.
const turnBytes = 256 << 10

// move copies from src to dst until one would block, src ends, or turnBytes have moved; true
// when it stopped for the turn with more to do. The buffer is taken for a read and returned
// once written out, so that an idle flow holds none.
func (d *direction) move(s *splicer) bool {
	budget := turnBytes
	for {
		if d.buffered > 0 {
			if !d.writable {
				return false
			}
			n, err := writeNonblock(d.dst, d.buffer[d.offset:d.offset+d.buffered])
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				d.writable = false
				return false
			case err != nil: // dst failed: nothing more can reach it
				d.eof, d.done = true, true
				return false
			}
			if n < d.buffered {
				// A short write: the socket's buffer is full, and its next EPOLLOUT says
				// when it has room (edge-triggered), so no write to see EAGAIN.
				d.writable = false
			}
			d.buffered -= n
			d.offset += n
			d.moved += int64(n)
			continue
		}
		if d.eof {
			d.done = true
			s.putBuffer(d.buffer)
			d.buffer = nil
			return false
		}
		if !d.readable || budget <= 0 {
			s.putBuffer(d.buffer)
			d.buffer = nil
			return d.readable
		}
		if d.buffer == nil {
			d.buffer = s.takeBuffer()
		}
		n, err := readNonblock(d.src, d.buffer)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			d.readable = false
			continue
		case err != nil || n == 0: // src ended (or failed, as a reset peer does)
			d.eof = true
			continue
		}
		if n < len(d.buffer) && !d.closing {
			// A short read emptied the socket's receive queue: bytes that arrive later
			// bring an EPOLLIN (edge-triggered), so no read to see EAGAIN. Once the peer's
			// end was reported, reads go on to it: its event came and will not come again.
			d.readable = false
		}
		d.buffered, d.offset = n, 0
		budget -= n
	}
}

// finish closes both sockets and returns the buffers, then reports the bytes moved.
func (f *flow) finish() {
	f.ended = true
	f.mu.Lock()
	f.closed = true
	// Closing through the connections runs their wrappers (open-connection metrics) and takes
	// the sockets out of Go's poller; the kernel drops them from the splicer's epoll.
	if f.client != nil {
		_ = f.client.Close()
	} else if f.fds[0] >= 0 {
		closeFD(f.fds[0])
	}
	if f.upstream != nil {
		_ = f.upstream.Close()
	} else if f.fds[1] >= 0 {
		closeFD(f.fds[1])
	}
	f.mu.Unlock()
	s := f.s
	for i := range f.dirs {
		d := &f.dirs[i]
		s.putBuffer(d.buffer)
		d.buffer, d.buffered = nil, 0
	}
	s.freeSlot(f)
	if f.accepted != nil {
		f.accepted.ended(f)
		return
	}
	if f.end != nil {
		f.end(f.dirs[1].moved, f.dirs[0].moved)
	}
}

// takeSlot gives f a slot in its splicer's flows.
func (s *splicer) takeSlot(f *flow) {
	s.mu.Lock()
	if n := len(s.free); n > 0 {
		f.slot = s.free[n-1]
		s.free = s.free[:n-1]
		s.flows[f.slot] = f
	} else {
		f.slot = int32(len(s.flows))
		s.flows = append(s.flows, f)
	}
	s.mu.Unlock()
}

func (s *splicer) freeSlot(f *flow) {
	s.mu.Lock()
	s.flows[f.slot] = nil
	s.free = append(s.free, f.slot)
	s.mu.Unlock()
}
