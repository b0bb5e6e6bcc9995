package kube

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// requestDuration is the latency of the manager's requests to the apiserver, by HTTP method:
// controller-runtime counts them (rest_client_requests_total) but does not time them.
var requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "certpilot_kube_api_request_duration_seconds",
	Help:    "Latency of requests to the Kubernetes apiserver by HTTP method (client-side throttling excluded; a watch counts until its response starts).",
	Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 9),
}, []string{"method"})

func init() { metrics.Registry.MustRegister(requestDuration) }

// TimeRequests makes every request config sends observed in
// certpilot_kube_api_request_duration_seconds.
func TimeRequests(config *rest.Config) {
	config.Wrap(func(next http.RoundTripper) http.RoundTripper {
		return timedTransport{next: next}
	})
}

type timedTransport struct{ next http.RoundTripper }

func (t timedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	started := time.Now()
	res, err := t.next.RoundTrip(req)
	requestDuration.WithLabelValues(req.Method).Observe(time.Since(started).Seconds())
	return res, err
}
