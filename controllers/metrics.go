package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// certpilot's Prometheus metrics, served on the manager's metrics endpoint. Per-certificate
// series carry namespace and name and come from CertificateCollector; counters carry only
// bounded labels.
var (
	issuances = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "certpilot_issuances_total",
		Help: "Issuance attempts that ended, by result (success, failure) and reason.",
	}, []string{"result", "reason"})
	acmeRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "certpilot_acme_requests_total",
		Help: "Requests to ACME servers by endpoint and HTTP status (0: no response).",
	}, []string{"endpoint", "status"})
	acmeRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "certpilot_acme_request_duration_seconds",
		Help:    "Latency of requests to ACME servers by endpoint.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 9),
	}, []string{"endpoint"})
	selfCheckDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "certpilot_challenge_self_check_duration_seconds",
		Help:    "Time a self-check of a challenge response took, retries for a response just published included, by challenge type.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 9),
	}, []string{"type"})
	selfChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "certpilot_challenge_self_checks_total",
		Help: "Self-checks of challenge responses before the CA is asked, by challenge type and result.",
	}, []string{"type", "result"})
	requeues = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "certpilot_certificate_requeues_total",
		Help: "Certificate reconciles that ended to look again later, by reason: the wait's (WaitingForValidation, SelfCheckFailed ...), Stalled (a slow recheck), CacheBehind (the cache had not seen the controller's last write), StatusConflict, Error (backoff).",
	}, []string{"reason"})
	ordersRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "certpilot_orders_refused_total",
		Help: "New ACME orders not created for the shared account's limits, by reason: Throttled (the namespace's --namespace-order-budget) or AccountPaused (after a rateLimited answer).",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(issuances, requeues, acmeRequests, acmeRequestDuration, selfChecks, selfCheckDuration, ordersRefused)
}

// countRequeue counts a reconcile that ended with err (before resultOf) to look again.
func countRequeue(err error) {
	if err == nil {
		return
	}
	reason := "Error"
	if w, ok := asWait(err); ok {
		reason = w.Reason
	} else if _, ok := asStalled(err); ok {
		reason = "Stalled"
	}
	requeues.WithLabelValues(reason).Inc()
}

// observeACMERequest feeds the ACME request metrics (acme.Options.ObserveRequest).
func observeACMERequest(endpoint string, status int, duration time.Duration) {
	acmeRequests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
	acmeRequestDuration.WithLabelValues(endpoint).Observe(duration.Seconds())
}

// The per-certificate series, described once.
var (
	certificateNotAfterDesc = prometheus.NewDesc("certpilot_certificate_not_after_timestamp_seconds",
		"When the certificate in the Secret expires (Unix time).", []string{"namespace", "name"}, nil)
	certificateRenewalTimeDesc = prometheus.NewDesc("certpilot_certificate_renewal_timestamp_seconds",
		"When certpilot renews the certificate (Unix time).", []string{"namespace", "name"}, nil)
	certificateReadyDesc = prometheus.NewDesc("certpilot_certificate_ready",
		"1 when the Certificate is Ready, else 0.", []string{"namespace", "name"}, nil)
	certificateAutoRenewableDesc = prometheus.NewDesc("certpilot_certificate_auto_renewable",
		"1 when certpilot renews the certificate without a person (not dns01 manual).", []string{"namespace", "name"}, nil)
)

// collectTimeout bounds the read of the Certificates at a scrape.
const collectTimeout = 10 * time.Second

// CertificateCollector serves the per-certificate series (expiry, renewal time, Ready,
// auto-renewable) from the Certificates' statuses in the manager's cache, at each scrape. No
// series is kept between scrapes, so their memory does not grow with the number of
// Certificates (about 1.7 KB each as gauges), and a deleted Certificate's series end with it.
// Only the elected leader serves them, as only it reconciles: two replicas do not report every
// Certificate twice.
type CertificateCollector struct {
	// Reader lists the Certificates (the manager's cache).
	Reader client.Reader
	// Elected is closed once this replica leads (the manager's Elected).
	Elected <-chan struct{}
}

// Describe implements prometheus.Collector.
func (c *CertificateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{certificateNotAfterDesc, certificateRenewalTimeDesc, certificateReadyDesc, certificateAutoRenewableDesc} {
		ch <- desc
	}
}

// Collect implements prometheus.Collector.
func (c *CertificateCollector) Collect(ch chan<- prometheus.Metric) {
	select {
	case <-c.Elected:
	default:
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	var list certpilotv1alpha1.CertificateList
	// Read only: the cache's objects themselves, not copies of them.
	if err := c.Reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		ch <- prometheus.NewInvalidMetric(certificateReadyDesc, fmt.Errorf("listing Certificates: %w", err))
		return
	}
	for i := range list.Items {
		cert := &list.Items[i]
		gauge := func(desc *prometheus.Desc, value float64) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, value, cert.Namespace, cert.Name)
		}
		if cert.Status.NotAfter != nil {
			gauge(certificateNotAfterDesc, float64(cert.Status.NotAfter.Unix()))
		}
		if cert.Status.RenewalTime != nil {
			gauge(certificateRenewalTimeDesc, float64(cert.Status.RenewalTime.Unix()))
		}
		gauge(certificateReadyDesc, boolFloat(meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady)))
		if cert.Status.AutoRenewable != nil {
			gauge(certificateAutoRenewableDesc, boolFloat(*cert.Status.AutoRenewable))
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
