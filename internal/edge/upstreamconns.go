package edge

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// upstreamExchange is one request's turn on a pooled upstream connection: the response read
// from it, whose body (when it has one) the client's response streams. Close ends the turn:
// the connection goes back to its pool when the body was read to its end and neither side
// asked to close it, and is closed otherwise, so that no unread byte of one response can be
// taken for the next.
type upstreamExchange interface {
	io.ReadCloser // the response body
	header() *fasthttp.ResponseHeader
	// hasBody is false when the response has no body to stream (HEAD, 204, 304).
	hasBody() bool
	// logTo has Close write entry, with the body bytes read, to log.
	logTo(entry *accessEntry, log *AccessLog)
}

// clientConn is fasthttp's pooled connection type (unexported: type parameters name it).
type clientConn interface{ Conn() net.Conn }

// upstreamConns sends requests over the keep-alive connections of a fasthttp HostClient,
// as HostClient.Do does, but with the response and its streamed body in one pooled value:
// Do's own streamed body costs four allocations per request (its wrapper and three closures).
// The HostClient still dials, bounds and pools the connections.
type upstreamConns[C clientConn] struct {
	client    *fasthttp.HostClient
	acquire   func(*fasthttp.HostClient, time.Duration, bool) (C, error)
	release   func(*fasthttp.HostClient, C)
	discard   func(*fasthttp.HostClient, C)
	exchanges sync.Pool
}

func newUpstreamConns[C clientConn](client *fasthttp.HostClient, acquire func(*fasthttp.HostClient, time.Duration, bool) (C, error),
	release, discard func(*fasthttp.HostClient, C)) *upstreamConns[C] {
	u := &upstreamConns[C]{client: client, acquire: acquire, release: release, discard: discard}
	u.exchanges.New = func() any {
		x := &exchange[C]{conns: u}
		secureErrors(&x.response)
		return x
	}
	return u
}

// secureErrors has fasthttp leave the bytes of a malformed response header or trailer out of
// its parse errors (which the edge logs), as a HostClient with SecureErrorLogMessage does:
// the setting is unexported and only HostClient.Do sets it, so a Do that sends nothing
// (noTransport) sets it on response. Resetting the response keeps it.
func secureErrors(response *fasthttp.Response) {
	request := fasthttp.AcquireRequest()
	_ = secureErrorsClient.Do(request, response)
	fasthttp.ReleaseRequest(request)
	response.Reset()
}

var secureErrorsClient = &fasthttp.HostClient{SecureErrorLogMessage: true, Transport: noTransport{}}

// noTransport is a fasthttp transport that sends nothing.
type noTransport struct{}

func (noTransport) RoundTrip(*fasthttp.HostClient, *fasthttp.Request, *fasthttp.Response) (bool, error) {
	return false, nil
}

// do sends request and reads the response's header. A GET or HEAD without a streamed body is
// sent once more, on another connection, when the first attempt failed on a pooled connection
// (the upstream had closed it) other than by a timeout, as HostClient.Do with one retry does.
func (u *upstreamConns[C]) do(request *fasthttp.Request) (upstreamExchange, error) {
	request.URI().DisablePathNormalizing = true // the upstream gets the path the client sent
	retryable := (request.Header.IsGet() || request.Header.IsHead()) && !request.IsBodyStream()
	for attempt := 1; ; attempt++ {
		x, retry, err := u.roundTrip(request)
		if err == nil {
			return x, nil
		}
		if !retry || !retryable || attempt >= 2 || errors.Is(err, fasthttp.ErrTimeout) || isTimeout(err) {
			if err == io.EOF {
				err = fasthttp.ErrConnectionClosed
			}
			return nil, err
		}
	}
}

// roundTrip is one attempt; retry reports whether the request may be sent again.
func (u *upstreamConns[C]) roundTrip(request *fasthttp.Request) (_ *exchange[C], retry bool, _ error) {
	conn, err := u.acquire(u.client, 0, request.ConnectionClose())
	if err != nil {
		return nil, false, err
	}
	netConn := conn.Conn()
	writer := u.client.AcquireWriter(netConn)
	err = request.Write(writer)
	if err == nil {
		// The flush writes the end of the request; the reply is read next.
		awaiter, _ := netConn.(replyAwaiter)
		if awaiter != nil {
			awaiter.awaitReply(true)
		}
		err = writer.Flush()
		if awaiter != nil {
			awaiter.awaitReply(false)
		}
	}
	u.client.ReleaseWriter(writer)
	if err != nil {
		u.discard(u.client, conn)
		if timeout, ok := err.(interface{ Timeout() bool }); ok && timeout.Timeout() {
			err = fasthttp.ErrTimeout
		}
		return nil, true, err
	}
	x := u.exchanges.Get().(*exchange[C])
	x.conn = conn
	x.reader = u.client.AcquireReader(netConn)
	x.response.StreamBody = true
	x.response.SkipBody = request.Header.IsHead()
	if err := x.response.ReadLimitBody(x.reader, 0); err != nil {
		x.end(false)
		return nil, err != fasthttp.ErrBodyTooLarge, err
	}
	x.reuse = !request.ConnectionClose() && !x.response.ConnectionClose()
	x.body = x.response.BodyStream()
	// A body of length 0 is never read: it has ended already.
	x.ended = x.body == nil || x.response.Header.ContentLength() == 0
	return x, false, nil
}

// exchange is the upstreamExchange of upstreamConns[C].
type exchange[C clientConn] struct {
	conns    *upstreamConns[C]
	conn     C
	reader   *bufio.Reader
	response fasthttp.Response
	body     io.Reader // the response's body stream; nil without a body
	ended    bool      // the body was read to its end
	reuse    bool      // neither request nor response asked to close the connection
	entry    *accessEntry
	log      *AccessLog
	n        int64 // body bytes read
}

func (x *exchange[C]) header() *fasthttp.ResponseHeader { return &x.response.Header }

func (x *exchange[C]) hasBody() bool { return x.body != nil }

func (x *exchange[C]) logTo(entry *accessEntry, log *AccessLog) { x.entry, x.log = entry, log }

func (x *exchange[C]) Read(p []byte) (int, error) {
	if x.body == nil {
		return 0, io.EOF
	}
	n, err := x.body.Read(p)
	x.n += int64(n)
	if err == io.EOF {
		x.ended = true
	}
	return n, err
}

func (x *exchange[C]) Close() error {
	if x.entry != nil {
		x.entry.bytesSent = x.n
		x.log.write(x.entry)
	}
	x.end(x.ended && x.reuse)
	return nil
}

// end releases the response and its reader, returns the connection to its pool (reuse) or
// closes it, and x to its pool.
func (x *exchange[C]) end(reuse bool) {
	u := x.conns
	_ = x.response.CloseBodyStream() // before the reader it reads from goes back
	u.client.ReleaseReader(x.reader)
	if reuse {
		u.release(u.client, x.conn)
	} else {
		u.discard(u.client, x.conn)
	}
	x.response.Reset()
	var none C
	x.conn, x.reader, x.body, x.ended, x.reuse, x.entry, x.log, x.n = none, nil, nil, false, false, nil, nil, 0
	u.exchanges.Put(x)
}
