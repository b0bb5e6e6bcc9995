package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/acme"
)

// Timeouts of the edge's listeners. readHeaderTimeout also bounds the TLS handshake (net/http
// applies the smallest of its read and write timeouts to it), so a client that opens a
// connection and sends nothing cannot hold it.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 60 * time.Second
)

// Listeners are the edge's sockets. Health may be nil; HTTPS and HTTP may not.
type Listeners struct {
	HTTPS  net.Listener
	HTTP   net.Listener
	Health net.Listener
}

// Listen opens the edge's TCP listeners; an empty healthAddress opens none for health.
func Listen(httpsAddress, httpAddress, healthAddress string) (*Listeners, error) {
	listeners := &Listeners{}
	var err error
	if listeners.HTTPS, err = net.Listen("tcp", httpsAddress); err != nil {
		return nil, fmt.Errorf("listening for HTTPS: %w", err)
	}
	if listeners.HTTP, err = net.Listen("tcp", httpAddress); err != nil {
		listeners.Close()
		return nil, fmt.Errorf("listening for HTTP: %w", err)
	}
	if healthAddress != "" {
		if listeners.Health, err = net.Listen("tcp", healthAddress); err != nil {
			listeners.Close()
			return nil, fmt.Errorf("listening for health probes: %w", err)
		}
	}
	return listeners, nil
}

// Close closes the listeners that are open. Serve closes them itself; Close is for a failure
// between Listen and Serve.
func (l *Listeners) Close() {
	for _, listener := range []net.Listener{l.HTTPS, l.HTTP, l.Health} {
		if listener != nil {
			_ = listener.Close()
		}
	}
}

// Server runs the edge's listeners: HTTPS (tls-alpn-01 challenges and, for now, a minimal answer
// to ordinary connections), HTTP (http-01 challenges) and health probes.
type Server struct {
	challenges   *ChallengeStore
	certificates CertificateSource
	log          logr.Logger

	httpsServer  *http.Server
	httpServer   *http.Server
	healthServer *http.Server

	serving      atomic.Bool
	shuttingDown atomic.Bool
}

// NewServer returns a Server answering challenges from challenges and ordinary handshakes with
// certificates from certificates (nil: ordinary handshakes fail).
func NewServer(challenges *ChallengeStore, certificates CertificateSource, log logr.Logger) *Server {
	s := &Server{challenges: challenges, certificates: certificates, log: log}
	// net/http's own messages are mostly failed handshakes: scanners, clients that trust
	// nothing we serve, validations of names without a challenge. Useful when debugging a
	// validation, noise otherwise.
	errorLog := newErrorLog(log.V(1))

	// HTTP/1.1 only for now. Setting Protocols keeps net/http from adding h2, which the
	// minimal ordinary answer does not need; the proxy will decide later.
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)

	s.httpsServer = &http.Server{
		Handler:           http.HandlerFunc(s.serveOrdinary),
		TLSConfig:         NewTLSConfig(challenges, certificates),
		Protocols:         protocols,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errorLog,
		// For acme-tls/1 the handshake is the whole exchange (RFC 8737, section 3): the
		// validator sends no data. net/http closes the connection when this returns.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			acme.ALPNProto: func(_ *http.Server, conn *tls.Conn, _ http.Handler) {
				s.log.V(1).Info("Answered a tls-alpn-01 validation", "serverName", conn.ConnectionState().ServerName,
					"remoteAddress", conn.RemoteAddr().String())
			},
		},
	}
	s.httpServer = &http.Server{
		Handler:           NewHTTPHandler(challenges),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errorLog,
	}
	s.healthServer = &http.Server{
		Handler:           s.HealthHandler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          errorLog,
	}
	return s
}

// Serve serves on listeners until Shutdown, then returns nil. When a listener fails it closes
// the others and returns that error. Serve takes ownership of the listeners.
func (s *Server) Serve(listeners *Listeners) error {
	type serveFunc func() error
	serves := []serveFunc{
		func() error { return s.httpsServer.ServeTLS(listeners.HTTPS, "", "") },
		func() error { return s.httpServer.Serve(listeners.HTTP) },
	}
	if listeners.Health != nil {
		serves = append(serves, func() error { return s.healthServer.Serve(listeners.Health) })
	}

	errs := make(chan error, len(serves))
	for _, serve := range serves {
		go func() {
			err := serve()
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errs <- err
		}()
	}
	s.serving.Store(true)
	s.log.Info("Serving", "https", listeners.HTTPS.Addr().String(), "http", listeners.HTTP.Addr().String())

	var first error
	for range serves {
		if err := <-errs; err != nil && first == nil {
			first = err
			s.serving.Store(false)
			s.closeAll()
		}
	}
	s.serving.Store(false)
	return first
}

// Shutdown stops accepting connections, reports not ready, and waits until open connections
// finish or ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shuttingDown.Store(true)
	results := make(chan error, 3)
	for _, server := range []*http.Server{s.httpsServer, s.httpServer, s.healthServer} {
		go func() { results <- server.Shutdown(ctx) }()
	}
	var errs []error
	for range 3 {
		errs = append(errs, <-results)
	}
	return errors.Join(errs...)
}

func (s *Server) closeAll() {
	for _, server := range []*http.Server{s.httpsServer, s.httpServer, s.healthServer} {
		_ = server.Close()
	}
}

// Ready returns nil when the edge serves what its source says: the listeners are serving, the
// challenge store has synced and no shutdown has begun. Otherwise it says why not.
func (s *Server) Ready() error {
	switch {
	case s.shuttingDown.Load():
		return errors.New("shutting down")
	case !s.serving.Load():
		return errors.New("not serving yet")
	case !s.challenges.Synced():
		return errors.New("challenge responses not synced yet")
	}
	if synced, ok := s.certificates.(interface{ Synced() bool }); ok && !synced.Synced() {
		return errors.New("certificates not loaded yet")
	}
	return nil
}

// HealthHandler serves /healthz (the process answers) and /readyz (Ready).
func (s *Server) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// serveOrdinary answers requests over ordinary TLS connections. For now the edge has no
// upstream to proxy to, so it says so.
func (s *Server) serveOrdinary(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "certpilot edge: no upstream configured", http.StatusNotFound)
}

// newErrorLog adapts net/http's *log.Logger to logr.
func newErrorLog(logger logr.Logger) *log.Logger {
	return log.New(logWriter{logger}, "", 0)
}

type logWriter struct{ logger logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.logger.Info(strings.TrimSpace(string(p)), "source", "net/http")
	return len(p), nil
}
