package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// terminateProxy proxies terminated HTTPS requests: it picks the route by Host and path and
// proxies to its upstream with X-Forwarded-For, -Host and -Proto, keeping the client's Host
// header. HTTP/1.1 requests go through serveHTTP1 (fasthttp, http1proxy.go), WebSocket and
// other upgrades included; HTTP/2 requests through ServeHTTP (net/http's ReverseProxy).
type terminateProxy struct {
	routes    *Routes
	metrics   *Metrics
	accessLog *AccessLog // nil: off
	conns     *connSet   // the HTTPS listener's connections, and upgraded tunnels
	log       logr.Logger
}

// newTerminateProxy returns the proxy and arranges for every route table loaded into routes to
// get its upstream handlers, built once per load and shared by all requests.
func newTerminateProxy(routes *Routes, metrics *Metrics, accessLog *AccessLog, conns *connSet, log logr.Logger) *terminateProxy {
	p := &terminateProxy{routes: routes, metrics: metrics, accessLog: accessLog, conns: conns, log: log}
	routes.onSwap = p.compile
	p.compile(routes.current())
	return p
}

// compile gives each route of table its reverse proxy. Routes of one table share transports, so
// keep-alive connections to an upstream are pooled across routes; a reload starts new pools
// and the old ones close when idle.
func (p *terminateProxy) compile(table *routeTable) {
	timeouts := table.config.Timeouts.withDefaults()
	transports := map[bool]*http.Transport{}
	transport := func(insecure bool) http.RoundTripper {
		if t, ok := transports[insecure]; ok {
			return t
		}
		dialer := &net.Dialer{Timeout: timeouts.Dial.Duration, KeepAlive: 30 * time.Second}
		t := &http.Transport{
			Proxy:                 nil, // upstreams are in the cluster: never via $HTTP_PROXY
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          4096,
			MaxIdleConnsPerHost:   1024,
			IdleConnTimeout:       timeouts.Idle.Duration,
			TLSHandshakeTimeout:   timeouts.Dial.Duration,
			ResponseHeaderTimeout: timeouts.ResponseHeader.Duration,
			ExpectContinueTimeout: time.Second,
			TLSClientConfig:       &tls.Config{InsecureSkipVerify: insecure}, //nolint:gosec // opted into per route
		}
		transports[insecure] = t
		return t
	}
	type clientKey struct {
		upstream string
		insecure bool
	}
	clients := map[clientKey]*upstreamClient{}
	for _, routes := range table.byHost {
		for _, route := range routes {
			target := route.target
			key := clientKey{route.Upstream, route.InsecureSkipVerify}
			if clients[key] == nil {
				clients[key] = newUpstreamClient(target, route.InsecureSkipVerify, timeouts)
			}
			route.http1 = clients[key]
			upstream := &timedTransport{next: transport(route.InsecureSkipVerify), metrics: p.metrics}
			route.handler = &httputil.ReverseProxy{
				Rewrite: func(r *httputil.ProxyRequest) {
					r.SetURL(target)
					r.Out.Host = r.In.Host // the upstream routes by the name the client asked for
					r.SetXForwarded()
				},
				Transport: upstream,
				// FlushInterval 0: ReverseProxy flushes at once for streams (text/event-stream, unknown
				// length) and batches small responses into one write.
				BufferPool:   copyBuffers,
				ErrorLog:     newErrorLog(p.log.V(1)),
				ErrorHandler: p.upstreamError,
			}
		}
	}
}

// ServeHTTP proxies an HTTP/2 request.
func (p *terminateProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := p.routes.current().match(hostOnly(r.Host), r.URL.Path)
	if p.accessLog != nil {
		logged := &loggedResponse{ResponseWriter: w}
		defer func() {
			entry := &accessEntry{start: logged.started, listener: listenerHTTPS, mode: ModeTerminate, kind: accessKindRequest, client: r.RemoteAddr,
				host: r.Host, method: r.Method, path: r.URL.RequestURI(), protocol: r.Proto,
				status: logged.status, bytesSent: logged.bytes}
			if r.TLS != nil {
				entry.sni = r.TLS.ServerName
			}
			if route != nil {
				entry.upstream = route.http1.name
			}
			p.accessLog.write(entry)
		}()
		logged.started = time.Now()
		w = logged
	}
	if route == nil {
		http.Error(w, "certpilot edge: no route for this host and path", http.StatusNotFound)
		return
	}
	route.handler.(http.Handler).ServeHTTP(w, r)
}

// loggedResponse records the status and body size of a response for the access log.
type loggedResponse struct {
	http.ResponseWriter
	started time.Time
	status  int
	bytes   int64
}

func (w *loggedResponse) WriteHeader(status int) {
	if w.status == 0 && status >= 200 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *loggedResponse) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController (ReverseProxy's flushes) reach the connection's writer.
func (w *loggedResponse) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (p *terminateProxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		status = http.StatusGatewayTimeout
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	p.log.V(1).Info("Upstream request failed", "host", r.Host, "error", err.Error())
	http.Error(w, "certpilot edge: upstream unavailable", status)
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// hostOnly drops the port of a Host header.
func hostOnly(host string) string {
	if !strings.Contains(host, ":") { // no port: SplitHostPort would allocate its error
		return host
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// copyBuffers recycles the buffers that copy response bodies: without a pool ReverseProxy
// allocates (and the GC clears) 32 KiB per request, a quarter of the edge's CPU time under load.
var copyBuffers = &bufferPool{}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte {
	if buffer, ok := p.pool.Get().(*[]byte); ok {
		return *buffer
	}
	return make([]byte, 32*1024)
}

func (p *bufferPool) Put(buffer []byte) { p.pool.Put(&buffer) }

// timedTransport records upstream latency (until the response headers) and failures.
type timedTransport struct {
	next    http.RoundTripper
	metrics *Metrics
}

func (t *timedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	started := time.Now()
	response, err := t.next.RoundTrip(r)
	t.metrics.upstream(ModeTerminate, started, err)
	return response, err
}
