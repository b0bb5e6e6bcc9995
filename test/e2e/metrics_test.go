package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestMetrics scrapes the manager's metrics endpoint after an issuance and finds certpilot's
// series with sane values.
func TestMetrics(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-metrics", 0)
	cert := s.TLSALPN01Certificate("metered", "metered.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")

	certLabels := map[string]string{"namespace": s.Namespace, "name": "metered"}
	checks := []struct {
		metric string
		labels map[string]string
		ok     func(float64) bool
		want   string
	}{
		{"certpilot_certificate_not_after_timestamp_seconds", certLabels, func(v float64) bool { return v == float64(cert.Status.NotAfter.Unix()) }, "status.notAfter"},
		{"certpilot_certificate_renewal_timestamp_seconds", certLabels, func(v float64) bool { return v == float64(cert.Status.RenewalTime.Unix()) }, "status.renewalTime"},
		{"certpilot_certificate_ready", certLabels, func(v float64) bool { return v == 1 }, "1"},
		{"certpilot_certificate_auto_renewable", certLabels, func(v float64) bool { return v == 1 }, "1"},
		{"certpilot_issuances_total", map[string]string{"result": "success", "reason": "Issued"}, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"certpilot_acme_requests_total", map[string]string{"endpoint": "newOrder", "status": "201"}, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"certpilot_acme_requests_total", map[string]string{"endpoint": "finalize", "status": "200"}, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"certpilot_acme_request_duration_seconds", map[string]string{"endpoint": "newOrder"}, func(v float64) bool { return v >= 1 }, "a sample count >= 1"},
		{"certpilot_challenge_self_checks_total", map[string]string{"type": "tls-alpn-01", "result": "success"}, func(v float64) bool { return v >= 1 }, ">= 1"},
	}
	testenv.Eventually(t, 30*time.Second, "metrics", func() error {
		families, err := scrape(s.MetricsAddress)
		if err != nil {
			return err
		}
		var problems []string
		for _, check := range checks {
			value, found := find(families[check.metric], check.labels)
			if !found || !check.ok(value) {
				problems = append(problems, fmt.Sprintf("%s%v = %v (found %v), want %s", check.metric, check.labels, value, found, check.want))
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "; "))
		}
		return nil
	})

	// A deleted Certificate's series go with it.
	if err := kube.Client.Delete(ctx, cert); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the deleted Certificate's series gone", func() error {
		families, err := scrape(s.MetricsAddress)
		if err != nil {
			return err
		}
		for _, metric := range []string{"certpilot_certificate_not_after_timestamp_seconds", "certpilot_certificate_ready"} {
			if value, found := find(families[metric], certLabels); found {
				return fmt.Errorf("%s%v = %v after the Certificate was deleted", metric, certLabels, value)
			}
		}
		return nil
	})
}

func scrape(address string) (map[string]*dto.MetricFamily, error) {
	response, err := http.Get("http://" + address + "/metrics")
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(response.Body)
}

// find returns the value of the series with labels (a counter's or gauge's value, a histogram's
// sample count).
func find(family *dto.MetricFamily, labels map[string]string) (float64, bool) {
	if family == nil {
		return 0, false
	}
	for _, metric := range family.GetMetric() {
		matched := 0
		for _, pair := range metric.GetLabel() {
			if want, ok := labels[pair.GetName()]; ok && want == pair.GetValue() {
				matched++
			}
		}
		if matched != len(labels) {
			continue
		}
		switch {
		case metric.Gauge != nil:
			return metric.GetGauge().GetValue(), true
		case metric.Counter != nil:
			return metric.GetCounter().GetValue(), true
		case metric.Histogram != nil:
			return float64(metric.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// reconcileCount is how many reconciles of Certificates the manager has finished, whatever
// their result (controller-runtime's controller_runtime_reconcile_total for the "certificate"
// controller): a test waits for it to grow to know that a reconcile it caused has run.
func reconcileCount(t *testing.T, s *testenv.Stack) float64 {
	t.Helper()
	families, err := scrape(s.MetricsAddress)
	if err != nil {
		t.Fatalf("scraping the manager's metrics: %v", err)
	}
	var total float64
	for _, metric := range families["controller_runtime_reconcile_total"].GetMetric() {
		for _, pair := range metric.GetLabel() {
			if pair.GetName() == "controller" && pair.GetValue() == "certificate" {
				total += metric.GetCounter().GetValue()
			}
		}
	}
	return total
}

// pokeAndWaitForReconcile changes an annotation of cert (which the certificate controller
// reacts to) and returns once the manager has finished at least one more reconcile: a settle
// condition that needs no sleep.
func pokeAndWaitForReconcile(t *testing.T, s *testenv.Stack, cert *certpilotv1alpha1.Certificate) {
	t.Helper()
	ctx := context.Background()
	before := reconcileCount(t, s)
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
		t.Fatal(err)
	}
	poke := client.MergeFrom(cert.DeepCopy())
	if cert.Annotations == nil {
		cert.Annotations = map[string]string{}
	}
	cert.Annotations["example.com/poke"] = time.Now().Format(time.RFC3339Nano)
	if err := kube.Client.Patch(ctx, cert, poke); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "a reconcile after the poke", func() error {
		if n := reconcileCount(t, s); n <= before {
			return fmt.Errorf("%v reconciles, waiting for more than %v", n, before)
		}
		return nil
	})
}
