package edge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/valyala/fasthttp"
)

// The HTTP/1.1 side of terminate mode runs on fasthttp, server and upstream client: measured
// against net/http's server and Transport (docs/bench-edge.md), it does the same request with
// no allocation, no goroutine hand-off and no per-request header map, which is what kept the
// edge at half of nginx's keep-alive rate. HTTP/2 clients stay on net/http (proxy.go).

// Limits of the HTTP/1.1 server.
const (
	// maxRequestHeaderBytes bounds the request line and headers (fasthttp's read buffer).
	maxRequestHeaderBytes = 16 << 10
	// bufferedRequestBody: bodies up to this size are read before the request is proxied,
	// larger ones (and chunked ones) are streamed.
	bufferedRequestBody = 64 << 10
	// upstreamConnsPerHost bounds the connections to one upstream; a request waits up to the
	// dial timeout for one to free.
	upstreamConnsPerHost = 4096
)

// newHTTP1Server returns the fasthttp server of terminated HTTP/1.1 connections.
func newHTTP1Server(handler fasthttp.RequestHandler, log logr.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       handler,
		ReadTimeout:                   readHeaderTimeout, // request headers; the handler lifts it for bodies
		IdleTimeout:                   idleTimeout,
		ReadBufferSize:                maxRequestHeaderBytes,
		MaxRequestBodySize:            bufferedRequestBody,
		StreamRequestBody:             true,
		DisablePreParseMultipartForm:  true,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		SecureErrorLogMessage:         true, // never a request's content in an error message
		CloseOnShutdown:               true,
		KeepHijackedConns:             true, // upgraded tunnels own their connection
		Logger:                        fasthttpLogger{log},
	}
}

// fasthttpLogger adapts fasthttp's logger to logr (debug level: they are per-connection).
type fasthttpLogger struct{ log logr.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.V(1).Info("HTTP/1.1 server", "message", fmt.Sprintf(format, args...), "source", "fasthttp")
}

// upstreamRequester sends a request to an upstream and reads its response's header
// (upstreamConns).
type upstreamRequester interface {
	do(*fasthttp.Request) (upstreamExchange, error)
}

// upstreamClient is the HTTP/1.1 client of one upstream, with its keep-alive pool.
type upstreamClient struct {
	client   *fasthttp.HostClient // dials and pools the connections
	conns    upstreamRequester    // sends requests over them
	target   *url.URL
	https    bool
	basePath string // the target URL's path, prepended to request paths
	name     string // for logs: the upstream URL without credentials
	dial     time.Duration
}

func newUpstreamClient(target *url.URL, insecure bool, timeouts Timeouts) *upstreamClient {
	https := target.Scheme == "https"
	address := target.Host
	if target.Port() == "" {
		address = net.JoinHostPort(target.Hostname(), map[bool]string{true: "443", false: "80"}[https])
	}
	dialer := &net.Dialer{Timeout: timeouts.Dial.Duration, KeepAlive: 30 * time.Second}
	responseHeader := timeouts.ResponseHeader.Duration
	u := &upstreamClient{target: target, https: https, name: target.Redacted(), dial: timeouts.Dial.Duration}
	if target.Path != "/" {
		u.basePath = target.Path
	}
	u.client = &fasthttp.HostClient{
		Addr:  address,
		IsTLS: https,
		TLSConfig: &tls.Config{
			ServerName:         target.Hostname(),
			InsecureSkipVerify: insecure, //nolint:gosec // opted into per route
			NextProtos:         []string{"http/1.1"},
		},
		Dial: func(address string) (net.Conn, error) {
			conn, err := dialer.Dial("tcp", address)
			if err != nil {
				return nil, err
			}
			return newReadTimeoutConn(newRequestConn(conn), responseHeader), nil
		},
		MaxConns:            upstreamConnsPerHost,
		MaxConnWaitTimeout:  timeouts.Dial.Duration,
		MaxIdleConnDuration: timeouts.Idle.Duration,
		ConnPoolStrategy:    fasthttp.LIFO,
	}
	u.conns = newUpstreamConns(u.client, (*fasthttp.HostClient).AcquireConn, (*fasthttp.HostClient).ReleaseConn, (*fasthttp.HostClient).CloseConn)
	return u
}

// readTimeoutConn bounds the wait for the upstream as nginx's proxy_read_timeout does: at most
// timeout for the response to begin, and then between two reads, so streamed bodies are not
// cut while bytes flow. The deadline moves at most once per slack (a second), not per
// request: setting a deadline costs a runtime timer update, which per request showed in
// profiles.
type readTimeoutConn struct {
	net.Conn
	timeout, slack time.Duration
	deadline       time.Time
}

func newReadTimeoutConn(conn net.Conn, timeout time.Duration) net.Conn {
	if timeout <= 0 {
		return conn
	}
	return &readTimeoutConn{Conn: conn, timeout: timeout, slack: min(time.Second, timeout/10)}
}

func (c *readTimeoutConn) refresh() {
	now := time.Now()
	if c.deadline.Sub(now) < c.timeout-c.slack {
		c.deadline = now.Add(c.timeout)
		_ = c.Conn.SetReadDeadline(c.deadline)
	}
}

// SetReadDeadline and SetDeadline are the client's (fasthttp clears deadlines it did not set):
// the next read or write arms the timeout again.
func (c *readTimeoutConn) SetReadDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetReadDeadline(t)
}

func (c *readTimeoutConn) SetDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetDeadline(t)
}

func (c *readTimeoutConn) Write(p []byte) (int, error) {
	c.refresh() // a request: its response has the whole timeout to begin
	return c.Conn.Write(p)
}

func (c *readTimeoutConn) Read(p []byte) (int, error) {
	c.refresh()
	return c.Conn.Read(p)
}

// awaitReply passes on to a rawIOConn (replyAwaiter).
func (c *readTimeoutConn) awaitReply(on bool) {
	if conn, ok := c.Conn.(replyAwaiter); ok {
		conn.awaitReply(on)
	}
}

// replyAwaiter is a connection whose writes can wait for the reply to the request they end
// (rawIOConn), so that reading it needs no read that finds nothing yet.
type replyAwaiter interface{ awaitReply(on bool) }

// hop-by-hop headers (RFC 9110, section 7.6.1), never forwarded. Transfer-Encoding and
// Content-Length are fasthttp's: it frames bodies itself.
var hopByHopHeaders = []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade"}

// forwardedHeaders are the client's own claims, replaced by the edge's.
var forwardedHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// The headers the edge removes from what it forwards, by kind: a message that has none of a
// kind is spared that kind's deletions (each one a scan of the header).
const (
	removableConnection uint8 = 1 << iota // Connection (and what it names)
	removableHopByHop                     // hopByHopHeaders, and Expect in requests
	removableForwarded                    // forwardedHeaders, in requests

	removableHeaderBits = removableConnection | removableHopByHop | removableForwarded
)

// removableHeader returns the kind of a field name the edge removes, or 0.
func removableHeader(name []byte) uint8 {
	if len(name) == 0 {
		return 0
	}
	switch name[0] | 0x20 {
	case 'c':
		if equalFoldString(name, "Connection") {
			return removableConnection
		}
		return 0
	case 'e':
		if equalFoldString(name, "Expect") {
			return removableHopByHop
		}
		return 0
	case 'f', 'x':
		for _, forwarded := range forwardedHeaders {
			if equalFoldString(name, forwarded) {
				return removableForwarded
			}
		}
		return 0
	}
	for _, hop := range hopByHopHeaders {
		if equalFoldString(name, hop) {
			return removableHopByHop
		}
	}
	return 0
}

// requestRemovableHeaders returns the kinds of removable fields in a raw header section
// (checkRequestFraming accepted it: CRLF-ended lines, each a name, a colon and a value).
func requestRemovableHeaders(raw []byte) uint8 {
	var present uint8
	for len(raw) > 0 {
		end := bytes.IndexByte(raw, '\n')
		if end < 0 {
			return removableHeaderBits
		}
		line := raw[:end]
		raw = raw[end+1:]
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			if len(bytes.TrimSpace(line)) == 0 {
				break // the end of the header section
			}
			return removableHeaderBits
		}
		present |= removableHeader(line[:colon])
	}
	return present
}

// equalFoldString reports whether b and s are equal under ASCII case folding.
func equalFoldString(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if x != y && (x|0x20 != y|0x20 || x|0x20 < 'a' || x|0x20 > 'z') {
			return false
		}
	}
	return true
}

// forwardRequest replaces whatever forwarding headers the client sent with the edge's own
// (client address, original host, https) and puts the request under the upstream's base path.
// clientForwarded is false when the request has none of forwardedHeaders.
func forwardRequest(ctx *fasthttp.RequestCtx, upstream *upstreamClient, host []byte, clientForwarded bool) {
	header := &ctx.Request.Header
	if clientForwarded {
		for _, name := range forwardedHeaders {
			header.Del(name)
		}
	}
	var buffer [64]byte
	header.SetBytesV("X-Forwarded-For", appendClientIP(buffer[:0], ctx.RemoteAddr()))
	header.SetBytesV("X-Forwarded-Host", host)
	header.Set("X-Forwarded-Proto", "https")
	if upstream.basePath != "" {
		header.SetRequestURI(joinURLPath(upstream.basePath, string(header.RequestURI())))
	}
}

// serveHTTP1 proxies one HTTP/1.1 request.
func (p *terminateProxy) serveHTTP1(ctx *fasthttp.RequestCtx) {
	started := time.Now()
	request := &ctx.Request
	if err := checkRequestFraming(&request.Header); err != nil {
		p.refuseRequest(ctx, err)
		return
	}
	if err := normalizeRequestTarget(&request.Header); err != nil {
		p.refuseRequest(ctx, err)
		return
	}
	host := string(request.Header.Host())
	requestURI := request.Header.RequestURI()
	path := requestURI
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	route := p.routes.current().match(hostOnly(host), string(path))

	var entry *accessEntry
	if p.accessLog != nil {
		entry = &accessEntry{start: started, listener: listenerHTTPS, mode: ModeTerminate, kind: accessKindRequest, client: ctx.RemoteAddr().String(),
			sni: ctx.TLSConnectionState().ServerName, host: host, method: string(request.Header.Method()),
			path: string(requestURI), protocol: string(request.Header.Protocol())}
	}

	if route == nil {
		p.localError(ctx, entry, fasthttp.StatusNotFound, "certpilot edge: no route for this host and path\n")
		return
	}
	upstream := route.http1
	if entry != nil {
		entry.upstream = upstream.name
	}
	if request.IsBodyStream() {
		// Request headers were read within readHeaderTimeout; a streamed body may take longer.
		_ = ctx.Conn().SetReadDeadline(time.Time{})
	}

	if isUpgrade(&request.Header) {
		// ContentLength is -1 for a chunked body, -2 for none.
		if length := request.Header.ContentLength(); length > 0 || length == -1 || request.IsBodyStream() {
			// Nothing would frame the body for the upstream once the tunnel opens.
			p.refuseRequest(ctx, errors.New("upgrade request with a body"))
			return
		}
		p.upgrade(ctx, upstream, entry)
		return
	}

	p.rewriteRequest(ctx, upstream)
	exchange, err := upstream.conns.do(request)
	p.metrics.upstream(ModeTerminate, started, err)
	if err != nil {
		p.upstreamErrorHTTP1(ctx, entry, upstream, err)
		return
	}
	p.copyResponse(ctx, exchange, entry)
}

// rewriteRequest turns the client's request into the upstream's: the client's Host stays (the
// upstream routes by it), hop-by-hop headers go, X-Forwarded-* are the edge's.
func (p *terminateProxy) rewriteRequest(ctx *fasthttp.RequestCtx, upstream *upstreamClient) {
	header := &ctx.Request.Header
	present := removableHeaderBits
	if raw := header.RawHeaders(); len(raw) > 0 && header.ContentLength() != -1 {
		// The header as received says which of them there are (a chunked body's trailer
		// section, not in it, could add more: then every one is removed).
		present = requestRemovableHeaders(raw)
	}
	header.ResetConnectionClose() // the upstream connection stays pooled whatever the client does
	if present&removableConnection != 0 {
		var connection [128]byte // a copy: Del rewrites the header storage Peek points into
		removeConnectionHeaders(append(connection[:0], header.Peek("Connection")...), header.Del)
		header.Del("Connection")
	}
	if present&removableHopByHop != 0 {
		for _, name := range hopByHopHeaders {
			header.Del(name)
		}
		header.Del("Expect") // 100-continue was answered by the edge
	}
	forwardRequest(ctx, upstream, header.Host(), present&removableForwarded != 0)
	ctx.Request.UseHostHeader = true
	scheme := "http"
	if upstream.https {
		scheme = "https"
	}
	ctx.Request.URI().SetScheme(scheme)
}

// copyResponse makes the upstream's response the client's, its body streamed.
func (p *terminateProxy) copyResponse(ctx *fasthttp.RequestCtx, exchange upstreamExchange, entry *accessEntry) {
	// The client's response is a copy, so that what the client connection does (close after
	// this response) does not close the pooled upstream connection.
	response := &ctx.Response
	upstream := exchange.header()
	upstream.CopyTo(&response.Header)
	response.Header.ResetConnectionClose()
	var present uint8
	for name := range upstream.All() {
		present |= removableHeader(name)
	}
	if present&removableConnection != 0 {
		removeConnectionHeaders(upstream.Peek("Connection"), response.Header.Del)
		response.Header.Del("Connection")
	}
	if present&removableHopByHop != 0 {
		for _, name := range hopByHopHeaders {
			response.Header.Del(name)
		}
	}
	if entry != nil {
		entry.status = response.StatusCode()
		exchange.logTo(entry, p.accessLog)
	}
	if !exchange.hasBody() { // HEAD, 204, 304
		_ = exchange.Close()
		return
	}
	size := upstream.ContentLength()
	if size < 0 {
		size = -1 // unknown length: chunked to the client
	}
	if ctx.Request.Header.IsHead() {
		response.SkipBody = true
	}
	// fasthttp reads the body as it writes it, then closes it: the exchange ends there.
	response.SetBodyStream(exchange, size)
	if size >= 0 {
		response.Header.SetContentLength(size)
	}
}

// refuseRequest answers a request the edge will not proxy (checkRequestFraming) and closes the
// connection: whatever follows on it may have been framed another way.
func (p *terminateProxy) refuseRequest(ctx *fasthttp.RequestCtx, err error) {
	status := fasthttp.StatusBadRequest
	if errors.Is(err, errUnsupportedTransferCoding) {
		status = fasthttp.StatusNotImplemented
	}
	p.log.V(1).Info("Refused a request", "remoteAddress", ctx.RemoteAddr().String(), "reason", err.Error())
	var entry *accessEntry
	if p.accessLog != nil {
		entry = &accessEntry{start: time.Now(), listener: listenerHTTPS, mode: ModeTerminate, kind: accessKindRequest,
			client: ctx.RemoteAddr().String(), sni: ctx.TLSConnectionState().ServerName, method: string(ctx.Request.Header.Method()),
			protocol: string(ctx.Request.Header.Protocol())}
	}
	p.localError(ctx, entry, status, "certpilot edge: bad request\n")
	ctx.SetConnectionClose()
}

func (p *terminateProxy) localError(ctx *fasthttp.RequestCtx, entry *accessEntry, status int, message string) {
	ctx.Response.Reset()
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.Response.SetBodyString(message)
	if entry != nil {
		entry.status = status
		entry.bytesSent = int64(len(message))
		p.accessLog.write(entry)
	}
}

func (p *terminateProxy) upstreamErrorHTTP1(ctx *fasthttp.RequestCtx, entry *accessEntry, upstream *upstreamClient, err error) {
	status := fasthttp.StatusBadGateway
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
		status = fasthttp.StatusGatewayTimeout
	}
	p.log.V(1).Info("Upstream request failed", "host", string(ctx.Request.Header.Host()), "upstream", upstream.name, "error", err.Error())
	p.localError(ctx, entry, status, "certpilot edge: upstream unavailable\n")
}

// removeConnectionHeaders deletes the headers a Connection header names (RFC 9110, 7.6.1),
// except those that frame or route the message (framingHeaders).
func removeConnectionHeaders(connection []byte, del func(string)) {
	for len(connection) > 0 {
		var token []byte
		token, connection, _ = bytes.Cut(connection, []byte(","))
		token = bytes.TrimSpace(token)
		if len(token) > 0 && !bytes.EqualFold(token, []byte("close")) && !bytes.EqualFold(token, []byte("keep-alive")) && !isFramingHeader(token) {
			del(string(token))
		}
	}
}

// appendClientIP appends the IP of addr (a TCP address) to b.
func appendClientIP(b []byte, addr net.Addr) []byte {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(tcp.IP); ok {
			return ip.Unmap().AppendTo(b)
		}
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return b
	}
	return append(b, host...)
}

// joinURLPath prepends base to a request URI, with one slash between them.
func joinURLPath(base, requestURI string) string {
	switch {
	case len(base) > 0 && base[len(base)-1] == '/' && len(requestURI) > 0 && requestURI[0] == '/':
		return base + requestURI[1:]
	case (len(base) == 0 || base[len(base)-1] != '/') && (len(requestURI) == 0 || requestURI[0] != '/'):
		return base + "/" + requestURI
	}
	return base + requestURI
}
