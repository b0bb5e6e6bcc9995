package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
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

// tcpKeepAlive turns TCP keep-alive probes on at the kernel's settings
// (net.ipv4.tcp_keepalive_time, _intvl, _probes), as nginx's so_keepalive=on does, for the
// connections the edge accepts and its passthrough connections to upstreams: a peer that
// vanished from an idle tunnel is found without three more setsockopt calls per socket (Go's
// default sets 15 s intervals on every connection; with two sockets a passthrough connection,
// that was a sixth of its system calls).
var tcpKeepAlive = net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}

// Listen opens the edge's TCP listeners; an empty healthAddress opens none for health.
func Listen(httpsAddress, httpAddress, healthAddress string) (*Listeners, error) {
	listeners := &Listeners{}
	config := net.ListenConfig{KeepAliveConfig: tcpKeepAlive}
	var err error
	if listeners.HTTPS, err = config.Listen(context.Background(), "tcp", httpsAddress); err != nil {
		return nil, fmt.Errorf("listening for HTTPS: %w", err)
	}
	if listeners.HTTP, err = config.Listen(context.Background(), "tcp", httpAddress); err != nil {
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

// Options configure a Server.
type Options struct {
	// Mode is how ordinary TLS connections are carried (default ModeTerminate).
	Mode Mode
	// Challenges holds the ACME challenge responses; required.
	Challenges *ChallengeStore
	// Certificates serves ordinary handshakes in terminate mode (nil: they fail). When it has a
	// Synced method, the edge is not ready before it reports true.
	Certificates CertificateSource
	// Routes are the upstreams (nil: none; every request gets 404, every passthrough
	// connection is closed).
	Routes *Routes
	// RedirectHTTP redirects every plain HTTP request that is not an http-01 challenge to
	// HTTPS, on HTTPSPort (0 or 443: the default port). Otherwise such requests get 404.
	RedirectHTTP bool
	HTTPSPort    int
	// Metrics (nil: a new registry).
	Metrics *Metrics
	// Profiling serves Go's pprof handlers at /debug/pprof/ on the health listener.
	Profiling bool
	// AccessLog gets a line per request or connection (nil: none).
	AccessLog *AccessLog
	// ShutdownDelay is how long Shutdown keeps serving, not ready, before it stops accepting:
	// time for endpoints to drop the pod, so that no new connection arrives at a closed port.
	ShutdownDelay time.Duration
	Log           logr.Logger
}

// Server runs the edge's listeners: HTTPS (tls-alpn-01 challenges, and ordinary connections
// terminated and proxied, or passed through), HTTP (http-01 challenges, redirects to HTTPS) and
// health probes and metrics.
type Server struct {
	opts       Options
	challenges *ChallengeStore
	log        logr.Logger
	metrics    *Metrics

	terminate    *terminate   // terminate mode
	passthrough  *passthrough // passthrough mode
	httpServer   *http.Server
	healthServer *http.Server

	serving      atomic.Bool
	shuttingDown atomic.Bool
}

// NewServer returns a Server for opts.
func NewServer(opts Options) *Server {
	if opts.Mode == "" {
		opts.Mode = ModeTerminate
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.Routes == nil {
		opts.Routes = NewRoutes(opts.Mode)
	}
	opts.Routes.metrics = opts.Metrics
	if store, ok := opts.Certificates.(*CertificateStore); ok {
		store.OnChange(opts.Metrics.SetCertificates)
	}
	log := opts.Log
	s := &Server{opts: opts, challenges: opts.Challenges, log: log, metrics: opts.Metrics}
	// net/http's own messages are mostly failed handshakes: scanners, clients that trust
	// nothing we serve, validations of names without a challenge. Useful when debugging a
	// validation, noise otherwise. They are counted as failed handshakes.
	errorLog := stdlog.New(handshakeCounter{logger: log.V(1), metrics: opts.Metrics}, "", 0)

	if opts.Mode == ModePassthrough {
		s.passthrough = newPassthrough(opts.Routes, newTLSConfig(opts.Challenges, nil, nil, opts.Metrics), opts.Metrics, opts.AccessLog, log)
	} else {
		conns := newConnSet()
		proxy := newTerminateProxy(opts.Routes, opts.Metrics, opts.AccessLog, conns, log)
		tlsConfig := newTLSConfig(opts.Challenges, opts.Certificates, []string{"h2", "http/1.1"}, opts.Metrics)
		s.terminate = newTerminate(tlsConfig, proxy, conns, log.V(1), opts.Metrics, log)
	}
	var fallback http.Handler
	if opts.RedirectHTTP {
		fallback = redirectToHTTPS(opts.HTTPSPort)
	}
	s.httpServer = &http.Server{
		Handler:           logHTTPRequests(newHTTPHandler(opts.Challenges, fallback, opts.Metrics), opts.AccessLog),
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

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Serve serves on listeners until Shutdown, then returns nil. When a listener fails it closes
// the others and returns that error. Serve takes ownership of the listeners.
func (s *Server) Serve(listeners *Listeners) error {
	type serveFunc func() error
	serves := []serveFunc{
		func() error {
			https := s.metrics.countListener(listeners.HTTPS, listenerHTTPS)
			if s.passthrough != nil {
				return s.passthrough.serve(https)
			}
			return s.terminate.serve(https)
		},
		func() error { return s.httpServer.Serve(s.metrics.countListener(listeners.HTTP, listenerHTTP)) },
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
	s.log.Info("Serving", "mode", s.opts.Mode, "https", listeners.HTTPS.Addr().String(), "http", listeners.HTTP.Addr().String())

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

// Shutdown reports not ready first, keeps serving for ShutdownDelay (bounded by ctx), then
// stops accepting connections and waits until open requests, upgraded (WebSocket) tunnels and
// passthrough connections end or ctx is done; then it closes what is left and returns ctx's
// error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shuttingDown.Store(true)
	if s.opts.ShutdownDelay > 0 {
		s.log.Info("Not ready; serving on until endpoints drop this pod", "delay", s.opts.ShutdownDelay.String())
		delay := time.NewTimer(s.opts.ShutdownDelay)
		select {
		case <-delay.C:
		case <-ctx.Done():
			delay.Stop()
		}
	}
	shutdowns := []func(context.Context) error{s.httpServer.Shutdown, s.healthServer.Shutdown}
	if s.passthrough != nil {
		shutdowns = append(shutdowns, s.passthrough.shutdown)
	} else {
		shutdowns = append(shutdowns, s.terminate.shutdown)
	}
	results := make(chan error, len(shutdowns))
	for _, shutdown := range shutdowns {
		go func() { results <- shutdown(ctx) }()
	}
	var errs []error
	for range shutdowns {
		errs = append(errs, <-results)
	}
	return errors.Join(errs...)
}

func (s *Server) closeAll() {
	for _, server := range []*http.Server{s.httpServer, s.healthServer} {
		_ = server.Close()
	}
	if s.passthrough != nil {
		s.passthrough.closeAll()
	}
	if s.terminate != nil {
		s.terminate.closeAll()
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
	if !s.opts.Routes.Loaded() {
		return errors.New("routes not loaded yet")
	}
	if synced, ok := s.opts.Certificates.(interface{ Synced() bool }); ok && !synced.Synced() {
		return errors.New("certificates not loaded yet")
	}
	return nil
}

// HealthHandler serves /healthz (the process answers), /readyz (Ready) and /metrics.
func (s *Server) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	if s.opts.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
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

// newErrorLog adapts net/http's *log.Logger to logr.
func newErrorLog(logger logr.Logger) *stdlog.Logger {
	return stdlog.New(logWriter{logger}, "", 0)
}

type logWriter struct{ logger logr.Logger }

// handshakeCounter is a logWriter that also counts net/http's "TLS handshake error" messages as
// failed handshakes: net/http reports them only there.
type handshakeCounter struct {
	logger  logr.Logger
	metrics *Metrics
}

func (w handshakeCounter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "TLS handshake error") {
		w.metrics.handshake(handshakeFailed)
	}
	return logWriter{w.logger}.Write(p)
}

func (w logWriter) Write(p []byte) (int, error) {
	w.logger.Info(strings.TrimSpace(string(p)), "source", "net/http")
	return len(p), nil
}
