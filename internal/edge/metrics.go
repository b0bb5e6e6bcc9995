package edge

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handshake results counted by certpilot_edge_tls_handshakes_total.
const (
	handshakeOK       = "ok"
	handshakeACME     = "acme-tls/1"
	handshakeFailed   = "failed"
	handshakeSpliced  = "passthrough"
	listenerHTTPS     = "https"
	listenerHTTP      = "http"
	challengeAnswered = "answered"
	challengeMissing  = "not_found"
)

// Metrics are the edge's Prometheus metrics, in their own registry (served on the health
// listener at /metrics). The zero value is not usable: use NewMetrics.
type Metrics struct {
	Registry *prometheus.Registry

	connections      *prometheus.CounterVec
	openConnections  *prometheus.GaugeVec
	handshakes       *prometheus.CounterVec
	acmeAnswers      *prometheus.CounterVec
	upstreamDuration *prometheus.HistogramVec
	upstreamErrors   *prometheus.CounterVec
	certificates     prometheus.Gauge
	earliestExpiry   prometheus.Gauge
	reloads          *prometheus.CounterVec
	refused          *prometheus.CounterVec
	cachedSecrets    prometheus.Gauge

	// The upstream duration histograms of the two modes, looked up once (a label lookup per
	// proxied request showed in profiles).
	upstreamDurationTerminate, upstreamDurationPassthrough atomic.Pointer[prometheus.Observer]
}

// NewMetrics registers the edge's metrics, and the Go and process collectors, in a new
// registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certpilot_edge_connections_total", Help: "TCP connections accepted, by listener (https, http).",
		}, []string{"listener"}),
		openConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certpilot_edge_open_connections", Help: "TCP connections open now, by listener (https, http).",
		}, []string{"listener"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certpilot_edge_tls_handshakes_total",
			Help: "TLS handshakes on the HTTPS listener by result: ok (ordinary, terminated), acme-tls/1 " +
				"(a tls-alpn-01 challenge answered), passthrough (ClientHello read and spliced to an upstream), failed.",
		}, []string{"result"}),
		acmeAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certpilot_edge_acme_answers_total",
			Help: "ACME challenge requests by challenge (tls-alpn-01, http-01) and result (answered, not_found).",
		}, []string{"challenge", "result"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certpilot_edge_upstream_duration_seconds",
			Help:    "Upstream latency by mode: terminate, until the response headers; passthrough, to connect.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"mode"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certpilot_edge_upstream_errors_total", Help: "Requests or connections the upstream failed, by mode.",
		}, []string{"mode"}),
		certificates: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "certpilot_edge_certificates", Help: "Distinct certificates served by SNI (the default included).",
		}),
		earliestExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "certpilot_edge_certificate_earliest_expiry_timestamp_seconds",
			Help: "NotAfter (Unix time) of the served certificate that expires first; 0 when there is none.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certpilot_edge_config_reloads_total", Help: "Route configuration loads by result (ok, failed).",
		}, []string{"result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certpilot_edge_certificates_refused_total",
			Help: "Certificate Secrets not served, counted once per Secret version, by reason: invalid (unparsable, or the key " +
				"is not the leaf's), not_controlled (no controller reference to a Certificate), owner_not_found (no such " +
				"Certificate in the Secret's namespace), name_not_covered (no leaf name in its dnsNames), serial_not_issued " +
				"(the leaf's serial is not its status.serialNumber; also briefly during every renewal), namespace_not_allowed " +
				"(--certificate-host-namespaces lets the Secret's namespace serve none of its names).",
		}, []string{"reason"}),
		cachedSecrets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "certpilot_edge_cached_secrets",
			Help: "Certificate Secrets whose data the edge holds; claim Secrets are never among them.",
		}),
	}
	m.Registry.MustRegister(m.connections, m.openConnections, m.handshakes, m.acmeAnswers, m.upstreamDuration,
		m.upstreamErrors, m.certificates, m.earliestExpiry, m.reloads, m.refused, m.cachedSecrets,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// SetCertificates records the certificate count and earliest expiry (CertificateStore.OnChange).
func (m *Metrics) SetCertificates(count int, earliestExpiry time.Time) {
	m.certificates.Set(float64(count))
	if earliestExpiry.IsZero() {
		m.earliestExpiry.Set(0)
		return
	}
	m.earliestExpiry.Set(float64(earliestExpiry.Unix()))
}

func (m *Metrics) refuseCertificate(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) setCachedSecrets(count int) {
	if m != nil {
		m.cachedSecrets.Set(float64(count))
	}
}

func (m *Metrics) handshake(result string) {
	if m != nil {
		m.handshakes.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) acmeAnswer(challenge string, answered bool) {
	if m == nil {
		return
	}
	result := challengeMissing
	if answered {
		result = challengeAnswered
	}
	m.acmeAnswers.WithLabelValues(challenge, result).Inc()
}

func (m *Metrics) upstream(mode Mode, started time.Time, err error) {
	if m == nil {
		return
	}
	m.upstreamObserver(mode).Observe(time.Since(started).Seconds())
	if err != nil {
		m.upstreamErrors.WithLabelValues(string(mode)).Inc()
	}
}

// upstreamObserver returns the upstream duration histogram of mode.
func (m *Metrics) upstreamObserver(mode Mode) prometheus.Observer {
	var slot *atomic.Pointer[prometheus.Observer]
	switch mode {
	case ModeTerminate:
		slot = &m.upstreamDurationTerminate
	case ModePassthrough:
		slot = &m.upstreamDurationPassthrough
	default:
		return m.upstreamDuration.WithLabelValues(string(mode))
	}
	if observer := slot.Load(); observer != nil {
		return *observer
	}
	observer := m.upstreamDuration.WithLabelValues(string(mode))
	slot.Store(&observer)
	return observer
}

func (m *Metrics) reload(err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.reloads.WithLabelValues(result).Inc()
}

// countListener counts the connections it accepts and those open.
func (m *Metrics) countListener(listener net.Listener, name string) net.Listener {
	return &countingListener{Listener: listener, total: m.connections.WithLabelValues(name), open: m.openConnections.WithLabelValues(name)}
}

type countingListener struct {
	net.Listener
	total prometheus.Counter
	open  prometheus.Gauge
}

func (l *countingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.total.Inc()
	l.open.Inc()
	return &countingConn{Conn: conn, open: l.open}, nil
}

type countingConn struct {
	net.Conn
	open prometheus.Gauge
	once sync.Once
}

func (c *countingConn) Close() error {
	c.once.Do(c.open.Dec)
	return c.Conn.Close()
}

// NetConn returns the accepted connection, so that a splice can use it directly.
func (c *countingConn) NetConn() net.Conn { return c.Conn }
