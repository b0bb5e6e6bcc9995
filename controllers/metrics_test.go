package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// TestCertificateCollector: the per-certificate series are what the listed Certificates'
// statuses say, with no series for a field not set; a replica that does not lead serves none.
func TestCertificateCollector(t *testing.T) {
	notAfter := metav1.NewTime(time.Unix(1900000000, 0))
	renewal := metav1.NewTime(time.Unix(1890000000, 0))
	yes := true
	ready := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "www"},
		Status: certpilotv1alpha1.CertificateStatus{
			NotAfter: &notAfter, RenewalTime: &renewal, AutoRenewable: &yes,
			Conditions: []metav1.Condition{{Type: certpilotv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Issued"}},
		},
	}
	fresh := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "new"}}
	scheme := runtime.NewScheme()
	_ = certpilotv1alpha1.AddToScheme(scheme)
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(ready, fresh).Build()

	elected := make(chan struct{})
	collector := &CertificateCollector{Reader: reader, Elected: elected}
	if n := testutil.CollectAndCount(collector); n != 0 {
		t.Errorf("a replica that does not lead served %d series, want none", n)
	}
	close(elected)
	want := `
# HELP certpilot_certificate_auto_renewable 1 when certpilot renews the certificate without a person (not dns01 manual).
# TYPE certpilot_certificate_auto_renewable gauge
certpilot_certificate_auto_renewable{name="www",namespace="team-a"} 1
# HELP certpilot_certificate_not_after_timestamp_seconds When the certificate in the Secret expires (Unix time).
# TYPE certpilot_certificate_not_after_timestamp_seconds gauge
certpilot_certificate_not_after_timestamp_seconds{name="www",namespace="team-a"} 1.9e+09
# HELP certpilot_certificate_ready 1 when the Certificate is Ready, else 0.
# TYPE certpilot_certificate_ready gauge
certpilot_certificate_ready{name="new",namespace="team-b"} 0
certpilot_certificate_ready{name="www",namespace="team-a"} 1
# HELP certpilot_certificate_renewal_timestamp_seconds When certpilot renews the certificate (Unix time).
# TYPE certpilot_certificate_renewal_timestamp_seconds gauge
certpilot_certificate_renewal_timestamp_seconds{name="www",namespace="team-a"} 1.89e+09
`
	if err := testutil.CollectAndCompare(collector, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
