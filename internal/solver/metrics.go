package solver

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the dns01 persist solver, served on the manager's metrics endpoint beside the
// controllers'. They are set before each order, when the records are looked at.
var (
	persistUntil = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "certpilot_dns_persist_until_timestamp_seconds",
		Help: "The persistuntil of a Certificate's dns-persist-01 record (Unix time), for records that have one.",
	}, []string{"namespace", "name", "record"})
	persistExpiring = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "certpilot_dns_persist_record_expiring",
		Help: "1 when a dns-persist-01 record of the Certificate stops validating (persistuntil) before its next renewal, else 0.",
	}, []string{"namespace", "name"})
)

func init() {
	metrics.Registry.MustRegister(persistUntil, persistExpiring)
}

// ForgetMetrics drops the series of a deleted Certificate.
func ForgetMetrics(namespace, name string) {
	labels := prometheus.Labels{"namespace": namespace, "name": name}
	persistUntil.DeletePartialMatch(labels)
	persistExpiring.DeletePartialMatch(labels)
}
