package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// upgrade proxies an HTTP/1.1 upgrade (WebSocket and the like): the request goes to a new
// upstream connection, and from then on bytes flow both ways until one side closes. The
// tunnel is tracked, so shutdown waits for it until its deadline and then closes it.
func (p *terminateProxy) upgrade(ctx *fasthttp.RequestCtx, upstream *upstreamClient, entry *accessEntry) {
	header := &ctx.Request.Header
	host := append([]byte(nil), header.Host()...) // kept for the log, after the hijack
	forwardRequest(ctx, upstream, host)
	// The request head, and the body fasthttp has already read (usually none): ctx is not
	// usable once the hijack handler runs.
	head := append([]byte(nil), header.Header()...)
	head = append(head, ctx.Request.Body()...)
	started := time.Now()

	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) {
		defer client.Close()
		conn, err := p.dialUpstream(upstream)
		p.metrics.upstream(ModeTerminate, started, err)
		if err != nil {
			p.log.V(1).Info("Upstream upgrade failed", "host", string(host), "upstream", upstream.name, "error", err.Error())
			_, _ = io.WriteString(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"+
				"Connection: close\r\nContent-Length: 38\r\n\r\ncertpilot edge: upstream unavailable\r\n")
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
		status, sent, received := tunnel(client, tracked, head)
		if entry != nil {
			entry.kind, entry.status, entry.bytesSent, entry.bytesReceived = accessKindUpgrade, status, sent, received
			p.accessLog.write(entry)
		}
	})
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

// tunnel sends head to upstream, then copies both ways until either side ends, and closes
// both. It returns the upstream's status code (0 if it sent none) and the bytes sent to the
// client and received from it after head.
func tunnel(client, upstream net.Conn, head []byte) (status int, sent, received int64) {
	if _, err := upstream.Write(head); err != nil {
		return 0, 0, 0
	}
	reader := bufio.NewReaderSize(upstream, 4096)
	if line, err := reader.Peek(12); err == nil && bytes.HasPrefix(line, []byte("HTTP/1.")) {
		status, _ = strconv.Atoi(string(line[9:12]))
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
	return status, sent, received
}

// copyBuffered is io.Copy with a pooled buffer.
func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	buffer := copyBuffers.Get()
	defer copyBuffers.Put(buffer)
	return io.CopyBuffer(dst, src, buffer)
}
