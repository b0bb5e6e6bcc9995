package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// PebbleProxy is a loopback HTTPS reverse proxy in front of Pebble's ACME port, for a test that
// sees or answers some requests itself (StartProxy). It serves Pebble's own HTTPS certificate,
// so clients trust it with Pebble's CABundle, and passes the Host header on, so the URLs Pebble
// answers with point at the proxy.
type PebbleProxy struct {
	// ListenAddress is the proxy's host:port (HTTPS).
	ListenAddress string

	server   *http.Server
	done     chan struct{}
	stopOnce sync.Once
}

// StartProxy starts a PebbleProxy for p whose requests go through wrap first, for a test that
// sees or answers some of them itself (a CA that refuses new orders, say); Close stops it.
func (p *Pebble) StartProxy(wrap func(http.Handler) http.Handler) (*PebbleProxy, error) {
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
	var handler http.Handler = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
			r.Out.Host = r.In.Host // Pebble builds its URLs from Host
		},
		Transport: upstreamTransport,
	}
	handler = wrap(handler)
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

// DirectoryURL is the ACME directory URL through the proxy.
func (px *PebbleProxy) DirectoryURL() string { return "https://" + px.ListenAddress + "/dir" }

// Close stops the proxy and its connections. It is safe to call more than once.
func (px *PebbleProxy) Close() {
	px.stopOnce.Do(func() {
		px.server.Close()
		<-px.done
	})
}
