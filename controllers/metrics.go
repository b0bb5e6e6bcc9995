package controllers

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/solver"
)

// certpilot's Prometheus metrics, served on the manager's metrics endpoint. Per-certificate
// series carry namespace and name; counters carry only bounded labels.
var (
	certificateNotAfter = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "certpilot_certificate_not_after_timestamp_seconds",
		Help: "When the certificate in the Secret expires (Unix time).",
	}, []string{"namespace", "name"})
	certificateRenewalTime = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "certpilot_certificate_renewal_timestamp_seconds",
		Help: "When certpilot renews the certificate (Unix time).",
	}, []string{"namespace", "name"})
	certificateReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "certpilot_certificate_ready",
		Help: "1 when the Certificate is Ready, else 0.",
	}, []string{"namespace", "name"})
	certificateAutoRenewable = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "certpilot_certificate_auto_renewable",
		Help: "1 when certpilot renews the certificate without a person (not dns01 manual).",
	}, []string{"namespace", "name"})
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
)

func init() {
	metrics.Registry.MustRegister(certificateNotAfter, certificateRenewalTime, certificateReady, certificateAutoRenewable,
		issuances, acmeRequests, acmeRequestDuration, selfChecks, selfCheckDuration)
}

// observeACMERequest feeds the ACME request metrics (acme.Options.ObserveRequest).
func observeACMERequest(endpoint string, status int, duration time.Duration) {
	acmeRequests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
	acmeRequestDuration.WithLabelValues(endpoint).Observe(duration.Seconds())
}

// recordCertificateMetrics sets a Certificate's series from its status.
func recordCertificateMetrics(cert *certpilotv1alpha1.Certificate) {
	labels := prometheus.Labels{"namespace": cert.Namespace, "name": cert.Name}
	if cert.Status.NotAfter != nil {
		certificateNotAfter.With(labels).Set(float64(cert.Status.NotAfter.Unix()))
	} else {
		certificateNotAfter.Delete(labels)
	}
	if cert.Status.RenewalTime != nil {
		certificateRenewalTime.With(labels).Set(float64(cert.Status.RenewalTime.Unix()))
	} else {
		certificateRenewalTime.Delete(labels)
	}
	certificateReady.With(labels).Set(boolFloat(meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady)))
	if cert.Status.AutoRenewable != nil {
		certificateAutoRenewable.With(labels).Set(boolFloat(*cert.Status.AutoRenewable))
	}
}

// forgetCertificateMetrics drops a deleted Certificate's series.
func forgetCertificateMetrics(namespace, name string) {
	labels := prometheus.Labels{"namespace": namespace, "name": name}
	for _, gauge := range []*prometheus.GaugeVec{certificateNotAfter, certificateRenewalTime, certificateReady, certificateAutoRenewable} {
		gauge.Delete(labels)
	}
	solver.ForgetMetrics(namespace, name)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
