package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/acme"
)

// terminate serves the HTTPS listener in terminate mode. It completes each TLS handshake
// itself (within readHeaderTimeout) and then hands the connection on by its ALPN protocol:
// acme-tls/1 ends after the handshake (RFC 8737, section 3: the validator sends no data), h2
// goes to net/http's HTTP/2 server, everything else to the HTTP/1.1 server (fasthttp).
type terminate struct {
	tlsConfig *tls.Config
	conns     *connSet
	http1     *fasthttp.Server
	http2     *http.Server
	metrics   *Metrics
	log       logr.Logger

	// The servers accept from these: connections the edge has accepted and handshaken.
	http1Conns, http2Conns *connListener
}

func newTerminate(tlsConfig *tls.Config, proxy *terminateProxy, conns *connSet, errorLog logr.Logger, metrics *Metrics, log logr.Logger) *terminate {
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true)
	protocols.SetHTTP1(true) // net/http sees only h2 connections; HTTP/1 stays enabled so that it accepts them as TLS
	return &terminate{
		tlsConfig: tlsConfig,
		conns:     conns,
		http1:     newHTTP1Server(proxy.serveHTTP1, errorLog),
		http2: &http.Server{
			Handler: proxy,
			// Connections arrive handshaken; net/http reads NextProtos here to enable HTTP/2.
			TLSConfig:   &tls.Config{NextProtos: []string{"h2"}},
			Protocols:   protocols,
			IdleTimeout: idleTimeout,
			ErrorLog:    newErrorLog(errorLog),
		},
		metrics:    metrics,
		log:        log,
		http1Conns: newConnListener(nil),
		http2Conns: newConnListener(nil),
	}
}

// serve runs the servers and accepts on listener until shutdown.
func (t *terminate) serve(listener net.Listener) error {
	t.http1Conns.addr, t.http2Conns.addr = listener.Addr(), listener.Addr()
	errs := make(chan error, 2)
	go func() { errs <- t.http1.Serve(t.http1Conns) }()
	go func() { errs <- t.http2.Serve(t.http2Conns) }()
	err := t.conns.serve(listener, t.handle)
	if err != nil { // the listener failed: stop the servers too (shutdown stops them otherwise)
		_ = t.http1Conns.Close()
		_ = t.http2Conns.Close()
	}
	for range 2 {
		if serveErr := <-errs; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, net.ErrClosed) && err == nil {
			err = serveErr
		}
	}
	return err
}

// handle completes the handshake of one connection and passes it on.
func (t *terminate) handle(conn net.Conn) {
	tlsConn := tls.Server(newLazyReadDeadlineConn(newRawIOConn(conn)), t.tlsConfig)
	_ = conn.SetDeadline(time.Now().Add(readHeaderTimeout))
	if err := tlsConn.Handshake(); err != nil {
		_ = conn.Close()
		t.metrics.handshake(handshakeFailed)
		t.log.V(1).Info("TLS handshake failed", "remoteAddress", conn.RemoteAddr().String(), "error", err.Error())
		return
	}
	_ = conn.SetDeadline(time.Time{})
	state := tlsConn.ConnectionState()
	var pushed bool
	switch state.NegotiatedProtocol {
	case acme.ALPNProto:
		t.log.V(1).Info("Answered a tls-alpn-01 validation", "serverName", state.ServerName, "remoteAddress", conn.RemoteAddr().String())
		_ = tlsConn.Close()
		return
	case "h2":
		pushed = t.http2Conns.push(tlsConn)
	default:
		pushed = t.http1Conns.push(tlsConn)
	}
	if !pushed { // shutting down
		_ = tlsConn.Close()
	}
	// Otherwise the server owns the connection now, and closes it.
}

// shutdown stops accepting, lets the servers finish their requests and the tunnels and open
// connections end until ctx is done, then closes what is left.
func (t *terminate) shutdown(ctx context.Context) error {
	t.conns.stopAccepting()
	results := make(chan error, 2)
	go func() {
		err := t.http1.ShutdownWithContext(ctx)
		_ = t.http1Conns.Close() // also when Serve had not started yet
		results <- err
	}()
	go func() {
		err := t.http2.Shutdown(ctx)
		_ = t.http2Conns.Close()
		results <- err
	}()
	drained := t.conns.drain(ctx)
	errs := []error{drained}
	for range 2 {
		errs = append(errs, <-results)
	}
	return errors.Join(errs...)
}

func (t *terminate) closeAll() {
	t.conns.closeAll()
	_ = t.http1Conns.Close()
	_ = t.http2Conns.Close()
	_ = t.http2.Close()
}
