package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// isUpgrade reports whether a request asks to upgrade the connection: a Connection header with
// the token "upgrade" and an Upgrade header naming a protocol. Anything less is an ordinary
// request, proxied as one (its Connection and Upgrade headers dropped).
func isUpgrade(header *fasthttp.RequestHeader) bool {
	return header.ConnectionUpgrade() && len(bytes.TrimSpace(header.Peek("Upgrade"))) > 0
}

// upgrade proxies an HTTP/1.1 upgrade (WebSocket and the like): the request goes to a new
// upstream connection; when the upstream switches to a protocol the client asked for (101 with
// a matching Upgrade), bytes flow both ways until one side closes. Any other answer is passed to
// the client and both connections close, so that nothing the client sent after the request
// reaches the upstream past routing. The tunnel is tracked, so shutdown waits for it until its
// deadline and then closes it.
func (p *terminateProxy) upgrade(ctx *fasthttp.RequestCtx, upstream *upstreamClient, entry *accessEntry) {
	header := &ctx.Request.Header
	host := append([]byte(nil), header.Host()...) // kept for the log, after the hijack
	protocols := string(header.Peek("Upgrade"))
	var connection [128]byte // a copy: Del rewrites the header storage Peek points into
	removeConnectionHeaders(append(connection[:0], header.Peek("Connection")...), header.Del)
	for _, name := range hopByHopHeaders {
		if name != "Upgrade" {
			header.Del(name)
		}
	}
	header.Set("Connection", "Upgrade")
	forwardRequest(ctx, upstream, host, true)
	// The request head only (isUpgrade requests have no body): ctx is not usable once the
	// hijack handler runs.
	head := append([]byte(nil), header.Header()...)
	started := time.Now()

	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) {
		defer client.Close()
		conn, err := p.dialUpstream(upstream)
		p.metrics.upstream(ModeTerminate, started, err)
		if err != nil {
			p.log.V(1).Info("Upstream upgrade failed", "host", string(host), "upstream", upstream.name, "error", err.Error())
			writeBadGateway(client)
			if entry != nil {
				entry.status = fasthttp.StatusBadGateway
				p.accessLog.write(entry)
			}
			return
		}
		tracked, ok := p.conns.track(conn)
		if !ok { // shutting down
			_ = conn.Close()
			return
		}
		defer tracked.Close()
		status, sent, received, err := tunnel(client, tracked, head, protocols)
		if err != nil {
			p.log.V(1).Info("Upstream upgrade failed", "host", string(host), "upstream", upstream.name, "error", err.Error())
		}
		if entry != nil {
			entry.kind, entry.status, entry.bytesSent, entry.bytesReceived = accessKindUpgrade, status, sent, received
			p.accessLog.write(entry)
		}
	})
}

func writeBadGateway(client net.Conn) {
	_, _ = io.WriteString(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Connection: close\r\nContent-Length: 38\r\n\r\ncertpilot edge: upstream unavailable\r\n")
}

func (p *terminateProxy) dialUpstream(upstream *upstreamClient) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: upstream.dial, KeepAlive: 30 * time.Second}
	address := upstream.client.Addr
	if !upstream.https {
		return dialer.Dial("tcp", address)
	}
	config := upstream.client.TLSConfig.Clone()
	return tls.DialWithDialer(dialer, "tcp", address, config)
}

// tunnel sends head to upstream and reads its answer. A 101 that switches to one of protocols
// (the request's Upgrade header) is passed to the client, and then bytes are copied both ways
// until either side ends; any other answer is passed to the client (a 101 to a protocol not
// asked for becomes a 502) and nothing the client sent after the request is read. Both
// connections are closed on return. It returns the status the client got and the bytes sent to
// the client and received from it after head.
func tunnel(client, upstream net.Conn, head []byte, protocols string) (status int, sent, received int64, err error) {
	defer client.Close()
	defer upstream.Close()
	if _, err := upstream.Write(head); err != nil {
		writeBadGateway(client)
		return fasthttp.StatusBadGateway, 0, 0, err
	}
	reader := bufio.NewReaderSize(upstream, 4096)
	var response *http.Response
	for {
		response, err = http.ReadResponse(reader, nil)
		if err != nil {
			writeBadGateway(client)
			return fasthttp.StatusBadGateway, 0, 0, err
		}
		// Interim answers (100 Continue, 103 Early Hints) before the real one are dropped.
		if response.StatusCode == http.StatusSwitchingProtocols || response.StatusCode >= 200 {
			break
		}
	}
	if response.StatusCode != http.StatusSwitchingProtocols {
		// Not upgraded: the answer goes to the client and the connection ends with it.
		response.Close = true
		removeConnectionHeaders([]byte(response.Header.Get("Connection")), response.Header.Del)
		for _, name := range hopByHopHeaders {
			response.Header.Del(name)
		}
		counter := &countingWriter{w: client}
		_ = response.Write(counter)
		_ = response.Body.Close()
		return response.StatusCode, counter.n, 0, nil
	}
	if !upgradeMatches(protocols, response.Header.Get("Upgrade")) {
		writeBadGateway(client)
		return fasthttp.StatusBadGateway, 0, 0, fmt.Errorf("upstream switched to %q, not to one of %q", response.Header.Get("Upgrade"), protocols)
	}
	var responseHead bytes.Buffer
	responseHead.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = response.Header.Write(&responseHead)
	responseHead.WriteString("\r\n")
	if _, err := client.Write(responseHead.Bytes()); err != nil {
		return http.StatusSwitchingProtocols, 0, 0, err
	}
	done := make(chan int64, 1)
	go func() {
		n, _ := copyBuffered(upstream, client)
		closeWrite(upstream)
		done <- n
	}()
	sent, _ = copyBuffered(client, reader)
	// The upstream ended: the client gets everything it sent, then the connection closes,
	// which also ends the copy from the client.
	_ = client.Close()
	_ = upstream.Close()
	received = <-done
	return http.StatusSwitchingProtocols, sent, received, nil
}

// upgradeMatches reports whether the protocol an upstream switched to (its Upgrade header) is
// one the client asked for (protocol names compared without case; a version, after "/", must be
// the same when the client named one).
func upgradeMatches(requested, switched string) bool {
	switched = strings.TrimSpace(strings.Split(switched, ",")[0])
	if switched == "" {
		return false
	}
	for protocol := range strings.SplitSeq(requested, ",") {
		protocol = strings.TrimSpace(protocol)
		name, version, versioned := strings.Cut(protocol, "/")
		switchedName, switchedVersion, _ := strings.Cut(switched, "/")
		if strings.EqualFold(name, switchedName) && (!versioned || strings.EqualFold(version, switchedVersion)) {
			return true
		}
	}
	return false
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// copyBuffered is io.Copy with a pooled buffer.
func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	buffer := copyBuffers.Get()
	defer copyBuffers.Put(buffer)
	return io.CopyBuffer(dst, src, buffer)
}
