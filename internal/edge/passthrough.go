package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/valyala/fasthttp"
)

// clientHelloTimeout bounds how long a client may take to send its ClientHello (a variable
// for tests; a passthrough takes it when created).
var clientHelloTimeout = 10 * time.Second

// errHelloRead stops the handshake used to parse a ClientHello once it has been parsed.
var errHelloRead = errors.New("client hello read")

// readClientHello reads conn's TLS ClientHello without answering it. It returns the parsed
// hello and every byte read from conn (kept in buffer), which the caller replays to whoever
// completes the handshake. crypto/tls parses the hello (no hand-written parser), on a
// connection that records what it reads and refuses to write.
func readClientHello(conn net.Conn, buffer *bytes.Buffer) (*tls.ClientHelloInfo, []byte, error) {
	recorder := &recordingConn{reader: conn, buffer: buffer}
	err := tls.Server(recorder, helloReader).Handshake()
	if recorder.hello == nil {
		if err == nil {
			err = errors.New("no ClientHello")
		}
		return nil, buffer.Bytes(), err
	}
	return recorder.hello, buffer.Bytes(), nil
}

// helloReader is the configuration of the handshakes readClientHello starts: it keeps the
// parsed hello on the connection (a recordingConn) and ends the handshake there. One for all
// connections: a configuration and a closure per connection showed in allocation profiles.
var helloReader = &tls.Config{
	GetConfigForClient: func(info *tls.ClientHelloInfo) (*tls.Config, error) {
		copied := *info
		copied.Conn = nil
		if conn, ok := info.Conn.(*recordingConn); ok {
			conn.hello = &copied
		}
		return nil, errHelloRead
	},
}

// Limits of a ClientHello read by a splicer (helloFramed): crypto/tls takes handshake
// messages of up to 64 KiB in records of up to 16 KiB + 2 KiB; a client that sends more
// without completing its hello is refused.
const (
	maxHelloMessage = 4 + 65536
	maxHelloBytes   = 80 << 10
	maxRecordLength = 16<<10 + 2048
)

// helloFramed reports whether data holds a whole first TLS handshake message (the
// ClientHello), possibly across several records, or cannot be the start of one (not a
// handshake record, an oversized record or message, not a ClientHello): then parseHello has
// all it needs to parse or refuse it. False: more bytes are needed.
func helloFramed(data []byte) bool {
	var header [4]byte // of the handshake message
	seen := 0          // handshake bytes in whole records
	for len(data) >= 5 {
		if data[0] != 22 { // not a handshake record
			return true
		}
		length := int(data[3])<<8 | int(data[4])
		if length > maxRecordLength {
			return true
		}
		if len(data) < 5+length {
			return false
		}
		payload := data[5 : 5+length]
		if seen < len(header) {
			copy(header[seen:], payload)
		}
		seen += length
		data = data[5+length:]
		if seen >= len(header) {
			if header[0] != 1 { // not a ClientHello
				return true
			}
			message := 4 + (int(header[1])<<16 | int(header[2])<<8 | int(header[3]))
			if message > maxHelloMessage || seen >= message {
				return true
			}
		}
	}
	return false
}

// helloBuffers recycle the buffers that hold a ClientHello until it is replayed to the
// upstream: growing a new one for every connection showed in profiles. A hello is usually
// 0.3–2 KiB; buffers that grew past maxPooledHello are dropped.
var helloBuffers = sync.Pool{New: func() any {
	buffer := new(bytes.Buffer)
	buffer.Grow(2 << 10)
	return buffer
}}

const maxPooledHello = 16 << 10

// recordingConn reads from reader, keeping a copy in buffer, and fails writes: crypto/tls must
// not answer the hello it parses.
type recordingConn struct {
	net.Conn
	reader io.Reader
	buffer *bytes.Buffer
	hello  *tls.ClientHelloInfo // once parsed
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.reader.Read(p)
	c.buffer.Write(p[:n])
	return n, err
}

func (c *recordingConn) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

// replayConn reads prefix before reading conn.
type replayConn struct {
	net.Conn
	reader io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.reader.Read(p) }

// handedConn is a connection a splicer accepted and handed back to Go (acme-tls/1, an upstream
// named by a host name): prefix holds what the splicer read, read again first.
type handedConn struct {
	net.Conn
	prefix []byte
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the socket once the prefix has been read; until then the connection
// itself, which rawConn takes as the end of its unwrapping.
func (c *handedConn) NetConn() net.Conn {
	if len(c.prefix) > 0 {
		return c
	}
	return c.Conn
}

// passthrough serves the HTTPS listener in passthrough mode.
type passthrough struct {
	routes      *Routes
	challengeTL *tls.Config
	metrics     *Metrics
	accessLog   *AccessLog
	log         logr.Logger
	// helloTimeout is clientHelloTimeout.
	helloTimeout time.Duration
	// conns holds the accepted connections and their upstream connections: shutdown waits
	// for them until its deadline, then closes them.
	conns *connSet
}

func newPassthrough(routes *Routes, challenges *tls.Config, metrics *Metrics, accessLog *AccessLog, log logr.Logger) *passthrough {
	return &passthrough{routes: routes, challengeTL: challenges, metrics: metrics, accessLog: accessLog, log: log,
		helloTimeout: clientHelloTimeout, conns: newConnSet()}
}

// serve accepts connections until shutdown.
func (p *passthrough) serve(listener net.Listener) error {
	// The splicers accept and read ClientHellos themselves where they can
	// (splicer_accept_linux.go); the listener returned then only waits for its Close.
	if accepting := newAcceptor(p, listener); accepting != nil {
		listener = accepting
	}
	return p.conns.serve(listener, func(conn net.Conn) {
		if !p.handle(conn) {
			_ = conn.Close()
		}
	})
}

// shutdown stops accepting and waits for open connections to end until ctx is done, then
// closes them.
func (p *passthrough) shutdown(ctx context.Context) error { return p.conns.drain(ctx) }

func (p *passthrough) closeAll() { p.conns.closeAll() }

// handle reads the ClientHello and answers acme-tls/1 locally or splices the connection to the
// route's upstream. It returns true when it handed conn to a splicer, which closes it; false
// when the caller closes it.
func (p *passthrough) handle(conn net.Conn) (handedOver bool) {
	started := time.Now()
	_ = conn.SetReadDeadline(started.Add(p.helloTimeout))
	buffer := helloBuffers.Get().(*bytes.Buffer)
	buffer.Reset()
	release := func() { // once the hello has been replayed: prefix is the buffer's
		if buffer != nil && buffer.Cap() <= maxPooledHello {
			helloBuffers.Put(buffer)
		}
		buffer = nil
	}
	defer release()
	hello, prefix, err := readClientHello(conn, buffer)
	if err != nil {
		p.metrics.handshake(handshakeFailed)
		p.log.V(1).Info("Failed to read a ClientHello", "remoteAddress", conn.RemoteAddr().String(), "error", err.Error())
		return false
	}
	if offersACMETLS(hello) {
		// The challenge configuration answers or fails; it never serves anything else.
		replay := &replayConn{Conn: conn, reader: io.MultiReader(bytes.NewReader(prefix), conn)}
		tlsConn := tls.Server(replay, p.challengeTL)
		err := tlsConn.Handshake()
		if err != nil {
			p.metrics.handshake(handshakeFailed)
			p.log.V(1).Info("Failed a tls-alpn-01 handshake", "serverName", hello.ServerName, "error", err.Error())
			return false
		}
		p.log.V(1).Info("Answered a tls-alpn-01 validation", "serverName", hello.ServerName,
			"remoteAddress", conn.RemoteAddr().String())
		_ = tlsConn.Close()
		return false
	}
	_ = conn.SetReadDeadline(time.Time{})

	route := p.routes.current().match(hello.ServerName, "")
	if route == nil {
		p.metrics.handshake(handshakeFailed)
		p.log.V(1).Info("No route for a passthrough connection", "serverName", hello.ServerName)
		return false
	}
	p.metrics.handshake(handshakeSpliced)
	timeouts := p.routes.current().config.Timeouts.withDefaults()
	if address, err := netip.ParseAddrPort(route.Upstream); err == nil {
		if p.dialAndSplice(conn, address, route, hello.ServerName, prefix, started, timeouts.Dial.Duration) {
			return true
		}
	}
	dialed := time.Now()
	dialer := net.Dialer{Timeout: timeouts.Dial.Duration, KeepAliveConfig: tcpKeepAlive}
	upstream, err := dialer.Dial("tcp", route.Upstream)
	p.metrics.upstream(ModePassthrough, dialed, err)
	if err != nil {
		p.log.Info("Failed to connect to the upstream", "upstream", route.Upstream, "serverName", hello.ServerName, "error", err.Error())
		p.logConnection(started, conn, hello.ServerName, route.Upstream, 0, 0, fasthttp.StatusBadGateway)
		return false
	}
	tracked, ok := p.conns.track(upstream)
	if !ok {
		_ = upstream.Close()
		return false
	}
	defer func() {
		if !handedOver {
			_ = tracked.Close()
		}
	}()

	if route.ProxyProtocol {
		header := proxyproto.HeaderProxyFromAddrs(2, conn.RemoteAddr(), conn.LocalAddr())
		if _, err := header.WriteTo(upstream); err != nil {
			return false
		}
	}
	if _, err := upstream.Write(prefix); err != nil {
		return false
	}
	replayed := int64(len(prefix))
	release()
	end := func(sent, received int64) {
		p.logConnection(started, conn, hello.ServerName, route.Upstream, sent, received+replayed, 0)
	}
	if p.handOver(conn, tracked, end) {
		return true
	}
	end(splice(rawConn(conn), upstream, p.conns.workers.run))
	return false
}

// dialAndSplice hands client (a tracked connection) to a splicer that connects to upstream
// (an IP address: a name is resolved by Go's dialer in handle), writes the PROXY header when
// the route asks for one and the ClientHello, then splices; it reports the connect as handle
// does. False when the client cannot be handed over; the caller keeps it.
func (p *passthrough) dialAndSplice(client net.Conn, upstream netip.AddrPort, route *compiledRoute, sni string, hello []byte, started time.Time, timeout time.Duration) bool {
	trackedClient, ok := client.(*trackedConn)
	if !ok {
		return false
	}
	var prefix []byte
	if route.ProxyProtocol {
		header, err := proxyproto.HeaderProxyFromAddrs(2, client.RemoteAddr(), client.LocalAddr()).Format()
		if err != nil {
			return false
		}
		prefix = header
	}
	prefix = append(prefix, hello...) // hello is in a pooled buffer, released when handle returns
	dialed := time.Now()
	connected := false
	onConnect := func(err error) {
		p.metrics.upstream(ModePassthrough, dialed, err)
		if err != nil {
			p.log.Info("Failed to connect to the upstream", "upstream", route.Upstream, "serverName", sni, "error", err.Error())
			p.logConnection(started, client, sni, route.Upstream, 0, 0, fasthttp.StatusBadGateway)
			return
		}
		connected = true
	}
	f := newDialFlow(client, upstream, prefix, dialed.Add(timeout), onConnect, nil)
	if f == nil || !p.conns.trackCloser(f) {
		return false
	}
	replayed := int64(len(hello))
	f.end = func(sent, received int64) {
		p.conns.untrackCloser(f)
		if connected {
			p.logConnection(started, client, sni, route.Upstream, sent, received+replayed, 0)
		}
	}
	trackedClient.detach() // the flow is tracked in its place; only the splicer closes it
	if err := f.start(); err != nil {
		onConnect(err)
		_ = client.Close()
		f.end(0, 0)
	}
	return true
}

// handOver gives client and upstream (tracked connections) to a splicer (splicer_linux.go),
// which closes them and calls end once both directions have ended. It returns false when they
// cannot be handed over (not TCP sockets, shutdown begun, no splicer); the caller keeps them.
func (p *passthrough) handOver(client, upstream net.Conn, end func(sent, received int64)) bool {
	trackedClient, ok1 := client.(*trackedConn)
	trackedUpstream, ok2 := upstream.(*trackedConn)
	if !ok1 || !ok2 {
		return false
	}
	f := newFlow(client, upstream, nil)
	if f == nil || !p.conns.trackCloser(f) {
		return false
	}
	f.end = func(sent, received int64) {
		p.conns.untrackCloser(f)
		end(sent, received)
	}
	// The flow is tracked in the connections' place: from now on only the splicer closes
	// their sockets, so that no descriptor number is reused under it.
	trackedClient.detach()
	trackedUpstream.detach()
	if err := f.start(); err != nil {
		p.log.Info("Failed to hand a passthrough connection to a splicer", "error", err.Error())
		_ = client.Close()
		_ = upstream.Close()
		f.end(0, 0)
	}
	return true
}

// logConnection writes the access log line of a passthrough connection.
func (p *passthrough) logConnection(started time.Time, conn net.Conn, sni, upstream string, sent, received int64, status int) {
	if p.accessLog == nil {
		return
	}
	p.writeAccessLog(started, conn.RemoteAddr().String(), sni, upstream, sent, received, status)
}

func (p *passthrough) writeAccessLog(started time.Time, client, sni, upstream string, sent, received int64, status int) {
	p.accessLog.write(&accessEntry{start: started, listener: listenerHTTPS, mode: ModePassthrough, kind: accessKindConnection,
		client: client, sni: sni, status: status, bytesSent: sent, bytesReceived: received, upstream: upstream})
}

// splice copies both ways until both directions end, passing half-closes on. Between two TCP
// sockets the copy is the kernel's splice(2) through a pipe (copyConn): the bytes never enter
// user space. It returns the bytes sent to the client and received from it. run runs the
// second direction (on a worker). Only the direction that ends first half-closes its
// destination: when the second ends, the caller closes both connections, and a close sends the
// same FIN (every byte was read) without the shutdown(2) call.
func splice(client, upstream net.Conn, run func(func())) (sent, received int64) {
	var ended atomic.Int32
	done := make(chan int64, 1)
	run(func() {
		n := copyConn(upstream, client)
		if ended.Add(1) == 1 {
			closeWrite(upstream)
		}
		done <- n
	})
	sent = copyConn(client, upstream)
	if ended.Add(1) == 1 {
		closeWrite(client)
	}
	return sent, <-done
}

// spliceChunk is the most one splice moves at a time. Go's own splice moves up to 1 MiB a
// call; in BenchmarkPassthroughMiB (1 MiB answers) the whole process spent about a fifth
// less CPU per MiB with 256 or 512 KiB (docs/bench-edge.md), presumably because the bytes the
// upstream just wrote are still in the CPU's caches when the client reads them.
const spliceChunk = 256 << 10

// copyConn copies src to dst until src ends or either fails, and returns the bytes copied.
// Between two TCP connections it splices, at most spliceChunk a call (an io.LimitedReader
// around a *net.TCPConn is what net's splice path takes, with its limit).
func copyConn(dst, src net.Conn) int64 {
	to, ok := dst.(*net.TCPConn)
	if _, fromTCP := src.(*net.TCPConn); !ok || !fromTCP {
		n, _ := io.Copy(dst, src)
		return n
	}
	limited := &io.LimitedReader{R: src}
	var total int64
	for {
		limited.N = spliceChunk
		n, err := to.ReadFrom(limited)
		total += n
		if err != nil || limited.N > 0 { // failed, or src ended before the chunk was full
			return total
		}
	}
}

func closeWrite(conn net.Conn) {
	if tcp, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = tcp.CloseWrite()
		return
	}
	_ = conn.Close()
}
