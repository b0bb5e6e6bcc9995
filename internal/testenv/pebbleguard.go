package testenv

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Pebble v2.10.3's request paths that take part in its lock-order deadlock (wfe/wfe.go).
const (
	pebbleNewOrderPath = "/order-plz"
	pebbleAuthzPath    = "/authZ/"
)

// PebbleGuard keeps Pebble v2.10.3's new-order requests apart from each other and from its
// authorization requests, which deadlock it under load otherwise. Two locks meet there:
// new-order holds the store's read lock while it locks every authorization in turn
// (FindValidAuthorization) and, for a new authorization, holds that authorization's lock while
// it adds challenges under the store's write lock; the authz handler holds the authorization's
// lock while it reads the store. A store writer waiting between them blocks both for good (Go's
// RWMutex lets no new reader in while a writer waits). Seen at N=1000 with 100 clients at once,
// never at 200.
//
// The rule: a POST to new-order holds the guard exclusively, a request to an authorization
// holds it shared, everything else passes. The benchmark's floor applies it in process
// (Transport) and the manager's run through a proxy (StartGuardedProxy) with the same code, so
// that both sides of a comparison wait for the same lock.
type PebbleGuard struct{ mu sync.RWMutex }

// guardHold is what a request must hold of a PebbleGuard.
type guardHold int

const (
	holdNone guardHold = iota
	holdShared
	holdExclusive
)

// pebbleGuardRule says what a request with method and path must hold.
func pebbleGuardRule(method, path string) guardHold {
	switch {
	case method == http.MethodPost && path == pebbleNewOrderPath:
		return holdExclusive
	case strings.HasPrefix(path, pebbleAuthzPath):
		return holdShared
	default:
		return holdNone
	}
}

// Hold takes what a request with method and path must hold and returns what releases it.
func (g *PebbleGuard) Hold(method, path string) (release func()) {
	switch pebbleGuardRule(method, path) {
	case holdExclusive:
		g.mu.Lock()
		return g.mu.Unlock
	case holdShared:
		g.mu.RLock()
		return g.mu.RUnlock
	default:
		return func() {}
	}
}

// Transport returns next with the guard held around every request it sends, until the whole
// response has been read (ACME responses are small).
func (g *PebbleGuard) Transport(next http.RoundTripper) http.RoundTripper {
	return guardedTransport{guard: g, next: next}
}

type guardedTransport struct {
	guard *PebbleGuard
	next  http.RoundTripper
}

func (t guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	release := t.guard.Hold(req.Method, req.URL.Path)
	defer release()
	res, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", req.Method, req.URL.Path, err)
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	res.ContentLength = int64(len(body))
	return res, nil
}

// PebbleProxy is a loopback HTTPS reverse proxy in front of Pebble's ACME port that applies a
// PebbleGuard to every request, for an ACME client that cannot take the guard itself (the
// manager). It serves Pebble's own HTTPS certificate, so clients trust it with Pebble's
// CABundle, and passes the Host header on, so the URLs Pebble answers with point at the proxy.
type PebbleProxy struct {
	// ListenAddress is the proxy's host:port (HTTPS).
	ListenAddress string

	server   *http.Server
	done     chan struct{}
	stopOnce sync.Once
}

// StartGuardedProxy starts a PebbleProxy for p on a free loopback port; Close stops it.
func (p *Pebble) StartGuardedProxy(guard *PebbleGuard) (*PebbleProxy, error) {
	return p.startProxy(guard.Transport, nil)
}

// StartProxy starts a PebbleProxy for p whose requests go through wrap first, for a test that
// sees or answers some of them itself (a CA that refuses new orders, say); Close stops it.
func (p *Pebble) StartProxy(wrap func(http.Handler) http.Handler) (*PebbleProxy, error) {
	return p.startProxy(nil, wrap)
}

// startProxy starts a PebbleProxy for p, its upstream transport wrapped by transport and its
// handler by wrap (either nil: none).
func (p *Pebble) startProxy(transport func(http.RoundTripper) http.RoundTripper, wrap func(http.Handler) http.Handler) (*PebbleProxy, error) {
	certificate, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading Pebble's HTTPS certificate for the proxy: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.CABundle) {
		return nil, errors.New("Pebble's CA bundle holds no certificate")
	}
	upstream := &url.URL{Scheme: "https", Host: p.ListenAddress}
	upstreamTransport := http.DefaultTransport.(*http.Transport).Clone()
	upstreamTransport.TLSClientConfig = &tls.Config{RootCAs: pool}
	upstreamTransport.MaxIdleConnsPerHost = 256
	var roundTripper http.RoundTripper = upstreamTransport
	if transport != nil {
		roundTripper = transport(upstreamTransport)
	}
	var handler http.Handler = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
			r.Out.Host = r.In.Host // Pebble builds its URLs from Host
		},
		Transport: roundTripper,
		// The proxy shares the cores with what a benchmark measures: no 32 KiB buffer of
		// garbage per request.
		BufferPool: proxyBuffers{},
	}
	if wrap != nil {
		handler = wrap(handler)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	px := &PebbleProxy{
		ListenAddress: listener.Addr().String(),
		server: &http.Server{
			Handler:           handler,
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{certificate}},
			ReadHeaderTimeout: 30 * time.Second,
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(px.done)
		_ = px.server.ServeTLS(listener, "", "")
	}()
	return px, nil
}

// proxyBuffers lends the proxy's copy buffers from a pool (httputil.BufferPool).
type proxyBuffers struct{}

var proxyBufferPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (proxyBuffers) Get() []byte { return proxyBufferPool.Get().(*[32 << 10]byte)[:] }

func (proxyBuffers) Put(b []byte) {
	if len(b) == 32<<10 {
		proxyBufferPool.Put((*[32 << 10]byte)(b))
	}
}

// DirectoryURL is the ACME directory URL through the proxy.
func (px *PebbleProxy) DirectoryURL() string { return "https://" + px.ListenAddress + "/dir" }

// Close stops the proxy and its connections. It is safe to call more than once.
func (px *PebbleProxy) Close() {
	px.stopOnce.Do(func() {
		px.server.Close()
		<-px.done
	})
}
