package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// terminateProxy is the handler of terminated HTTPS requests: it picks the route by Host and
// path and proxies to its upstream with X-Forwarded-For, -Host and -Proto, keeping the
// client's Host header. WebSocket upgrades (HTTP/1.1) are proxied too.
type terminateProxy struct {
	routes  *Routes
	metrics *Metrics
	log     logr.Logger
}

// newTerminateProxy returns the proxy and arranges for every route table loaded into routes to
// get its upstream handlers, built once per load and shared by all requests.
func newTerminateProxy(routes *Routes, metrics *Metrics, log logr.Logger) *terminateProxy {
	p := &terminateProxy{routes: routes, metrics: metrics, log: log}
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
	for _, routes := range table.byHost {
		for _, route := range routes {
			target := route.target
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

func (p *terminateProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := p.routes.current().match(hostOnly(r.Host), r.URL.Path)
	if route == nil {
		http.Error(w, "certpilot edge: no route for this host and path", http.StatusNotFound)
		return
	}
	route.handler.(http.Handler).ServeHTTP(w, r)
}

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
