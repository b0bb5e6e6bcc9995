package solver

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the solvers, served on the manager's metrics endpoint beside the controllers'.
var (
	// shardWrites and shardPuts show how well shard writes are grouped (ShardWriter).
	shardWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "certpilot_challenge_shard_writes_total",
		Help: "Writes (creates and patches, retries included) of challenge shard Secrets, by what they carried: presents (responses of one or more Puts, with any queued removals) or removals (queued removals on their own).",
	}, []string{"carried"})
	shardPuts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "certpilot_challenge_shard_puts_total",
		Help: "Puts of challenge responses into a shard (one per Present and shard), however many writes carried them.",
	})
	// shardSplits counts grouped writes the apiserver refused, written again one Put at a time.
	shardSplits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "certpilot_challenge_shard_split_writes_total",
		Help: "Writes of challenge shards that carried several Puts and were refused for their content (invalid, too large); each Put was then written alone.",
	})

	// The dns01 persist solver's are set before each order, when the records are looked at.
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
	metrics.Registry.MustRegister(shardWrites, shardPuts, shardSplits, persistUntil, persistExpiring)
}

// ForgetMetrics drops the series of a deleted Certificate.
func ForgetMetrics(namespace, name string) {
	labels := prometheus.Labels{"namespace": namespace, "name": name}
	persistUntil.DeletePartialMatch(labels)
	persistExpiring.DeletePartialMatch(labels)
}
