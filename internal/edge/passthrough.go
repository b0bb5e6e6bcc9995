package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/go-logr/logr"
	proxyproto "github.com/pires/go-proxyproto"
)

// clientHelloTimeout bounds how long a client may take to send its ClientHello.
const clientHelloTimeout = 10 * time.Second

// errHelloRead stops the handshake used to parse a ClientHello once it has been parsed.
var errHelloRead = errors.New("client hello read")

// readClientHello reads conn's TLS ClientHello without answering it. It returns the parsed
// hello and every byte read from conn, which the caller replays to whoever completes the
// handshake. crypto/tls parses the hello (no hand-written parser), on a connection that records
// what it reads and refuses to write.
func readClientHello(conn net.Conn) (*tls.ClientHelloInfo, []byte, error) {
	recorder := &recordingConn{reader: conn}
	var hello *tls.ClientHelloInfo
	err := tls.Server(recorder, &tls.Config{
		GetConfigForClient: func(info *tls.ClientHelloInfo) (*tls.Config, error) {
			copied := *info
			copied.Conn = nil
			hello = &copied
			return nil, errHelloRead
		},
	}).Handshake()
	if hello == nil {
		if err == nil {
			err = errors.New("no ClientHello")
		}
		return nil, recorder.buffer.Bytes(), err
	}
	return hello, recorder.buffer.Bytes(), nil
}

// recordingConn reads from reader, keeping a copy, and fails writes: crypto/tls must not
// answer the hello it parses.
type recordingConn struct {
	net.Conn
	reader io.Reader
	buffer bytes.Buffer
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

// passthrough serves the HTTPS listener in passthrough mode.
type passthrough struct {
	routes      *Routes
	challengeTL *tls.Config
	metrics     *Metrics
	log         logr.Logger

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closing  bool
	wg       sync.WaitGroup
	listener net.Listener
}

func newPassthrough(routes *Routes, challenges *tls.Config, metrics *Metrics, log logr.Logger) *passthrough {
	return &passthrough{routes: routes, challengeTL: challenges, metrics: metrics, log: log, conns: map[net.Conn]struct{}{}}
}

// serve accepts connections until the listener is closed by shutdown.
func (p *passthrough) serve(listener net.Listener) error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		_ = listener.Close()
		return nil
	}
	p.listener = listener
	p.mu.Unlock()
	var backoff time.Duration
	for {
		conn, err := listener.Accept()
		if err != nil {
			p.mu.Lock()
			closing := p.closing
			p.mu.Unlock()
			if closing {
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
		if !p.track(conn) {
			_ = conn.Close()
			continue
		}
		go func() {
			defer p.untrack(conn)
			p.handle(conn)
		}()
	}
}

func (p *passthrough) track(conn net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.conns[conn] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *passthrough) untrack(conn net.Conn) {
	_ = conn.Close()
	p.mu.Lock()
	delete(p.conns, conn)
	p.mu.Unlock()
	p.wg.Done()
}

// shutdown stops accepting and waits for open connections to end until ctx is done, then
// closes them.
func (p *passthrough) shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	if p.listener != nil {
		_ = p.listener.Close()
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		p.closeAll()
		<-done
		return ctx.Err()
	}
}

func (p *passthrough) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closing = true
	if p.listener != nil {
		_ = p.listener.Close()
	}
	for conn := range p.conns {
		_ = conn.Close()
	}
}

// handle reads the ClientHello and answers acme-tls/1 locally or splices the connection to the
// route's upstream.
func (p *passthrough) handle(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(clientHelloTimeout))
	hello, prefix, err := readClientHello(conn)
	if err != nil {
		p.metrics.handshake(handshakeFailed)
		p.log.V(1).Info("Failed to read a ClientHello", "remoteAddress", conn.RemoteAddr().String(), "error", err.Error())
		return
	}
	replay := &replayConn{Conn: conn, reader: io.MultiReader(bytes.NewReader(prefix), conn)}

	if offersACMETLS(hello) {
		// The challenge configuration answers or fails; it never serves anything else.
		tlsConn := tls.Server(replay, p.challengeTL)
		err := tlsConn.Handshake()
		if err != nil {
			p.metrics.handshake(handshakeFailed)
			p.log.V(1).Info("Failed a tls-alpn-01 handshake", "serverName", hello.ServerName, "error", err.Error())
			return
		}
		p.log.V(1).Info("Answered a tls-alpn-01 validation", "serverName", hello.ServerName,
			"remoteAddress", conn.RemoteAddr().String())
		_ = tlsConn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})

	route := p.routes.current().match(hello.ServerName, "")
	if route == nil {
		p.metrics.handshake(handshakeFailed)
		p.log.V(1).Info("No route for a passthrough connection", "serverName", hello.ServerName)
		return
	}
	p.metrics.handshake(handshakeSpliced)
	timeouts := p.routes.current().config.Timeouts.withDefaults()
	started := time.Now()
	upstream, err := net.DialTimeout("tcp", route.Upstream, timeouts.Dial.Duration)
	p.metrics.upstream(ModePassthrough, started, err)
	if err != nil {
		p.log.Info("Failed to connect to the upstream", "upstream", route.Upstream, "serverName", hello.ServerName, "error", err.Error())
		return
	}
	if !p.track(upstream) {
		_ = upstream.Close()
		return
	}
	defer p.untrack(upstream)

	if route.ProxyProtocol {
		header := proxyproto.HeaderProxyFromAddrs(2, conn.RemoteAddr(), conn.LocalAddr())
		if _, err := header.WriteTo(upstream); err != nil {
			return
		}
	}
	if _, err := upstream.Write(prefix); err != nil {
		return
	}
	splice(rawConn(conn), upstream)
}

// rawConn unwraps the metrics wrapper so that io.Copy between two TCP connections can use the
// kernel's splice.
func rawConn(conn net.Conn) net.Conn {
	if wrapped, ok := conn.(interface{ NetConn() net.Conn }); ok {
		return wrapped.NetConn()
	}
	return conn
}

// splice copies both ways until both directions end, passing half-closes on.
func splice(client, upstream net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(upstream, client)
		closeWrite(upstream)
	}()
	_, _ = io.Copy(client, upstream)
	closeWrite(client)
	<-done
}

func closeWrite(conn net.Conn) {
	if tcp, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = tcp.CloseWrite()
		return
	}
	_ = conn.Close()
}
