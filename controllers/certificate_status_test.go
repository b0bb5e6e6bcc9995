package controllers

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// TestSummarizeCertificate: the conditions every kstatus consumer reads, for each outcome of a
// reconcile, from the Ready condition the decision computed and the steps' error.
func TestSummarizeCertificate(t *testing.T) {
	const typeIssuing = certpilotv1alpha1.ConditionIssuing
	upToDate := &metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonUpToDate, Message: "Certificate is valid until 2027-01-01T00:00:00Z"}
	renewalDue := &metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonUpToDate, Message: "Certificate is valid until 2027-01-01T00:00:00Z"}
	missing := &metav1.Condition{Status: metav1.ConditionFalse, Reason: "SecretMissing", Message: "Secret ns/www-tls does not exist"}
	transient := errors.New("fetching the ACME directory: connection refused")
	openOrder := &certpilotv1alpha1.OrderStatus{URL: "https://ca.example/order/1", State: "pending"}
	validOrder := &certpilotv1alpha1.OrderStatus{URL: "https://ca.example/order/1", State: "valid"}
	wasIssuing := []metav1.Condition{{Type: typeIssuing, Status: metav1.ConditionTrue, Reason: reasonProgressing, Message: "Issuing the certificate"}}

	tests := map[string]struct {
		ready    *metav1.Condition
		order    *certpilotv1alpha1.OrderStatus
		previous []metav1.Condition
		err      error

		wantReady                                 *wantCondition
		wantReconciling, wantStalled, wantIssuing *wantCondition
		wantKstatus                               status.Status
	}{
		"issued and up to date": {
			ready: upToDate, order: validOrder,
			wantReady:   &wantCondition{metav1.ConditionTrue, reasonUpToDate, upToDate.Message},
			wantKstatus: status.CurrentStatus,
		},
		"order just finished: Issuing turns False": {
			ready: upToDate, order: validOrder, previous: wasIssuing,
			wantReady:   &wantCondition{metav1.ConditionTrue, reasonUpToDate, upToDate.Message},
			wantIssuing: &wantCondition{metav1.ConditionFalse, "Idle", "No order in progress"},
			wantKstatus: status.CurrentStatus,
		},
		"renewing: stays Ready while the order runs": {
			ready: renewalDue, order: openOrder,
			wantReady:       &wantCondition{metav1.ConditionTrue, reasonUpToDate, renewalDue.Message},
			wantReconciling: &wantCondition{metav1.ConditionTrue, reasonProgressing, "Issuing the certificate"},
			wantIssuing:     &wantCondition{metav1.ConditionTrue, reasonProgressing, "Issuing the certificate"},
			wantKstatus:     status.InProgressStatus,
		},
		"first issuance waiting on the CA": {
			ready: missing, order: openOrder, err: wait(time.Second, "OrderPending", "order is pending"),
			wantReady:       &wantCondition{metav1.ConditionFalse, "OrderPending", "order is pending"},
			wantReconciling: &wantCondition{metav1.ConditionTrue, "OrderPending", "order is pending"},
			wantIssuing:     &wantCondition{metav1.ConditionTrue, "OrderPending", "order is pending"},
			wantKstatus:     status.InProgressStatus,
		},
		"manual dns-01 renewal needs a person": {
			ready: renewalDue, order: openOrder, err: wait(time.Minute, "DNSRecordRequired", "create TXT _acme-challenge.www"),
			wantReady:       &wantCondition{metav1.ConditionTrue, reasonUpToDate, renewalDue.Message + ". The renewal needs you: create TXT _acme-challenge.www"},
			wantReconciling: &wantCondition{metav1.ConditionTrue, "DNSRecordRequired", "create TXT _acme-challenge.www"},
			wantIssuing:     &wantCondition{metav1.ConditionTrue, "DNSRecordRequired", "create TXT _acme-challenge.www"},
			wantKstatus:     status.InProgressStatus,
		},
		"transient error before any certificate": {
			ready: missing, err: transient,
			wantReady:       &wantCondition{metav1.ConditionFalse, reasonError, transient.Error()},
			wantReconciling: &wantCondition{metav1.ConditionTrue, reasonError, transient.Error()},
			wantKstatus:     status.InProgressStatus,
		},
		"stalled before the decision ran": {
			err:         stalled("IssuerNotFound", "ClusterIssuer %q does not exist", "pebble"),
			wantReady:   &wantCondition{metav1.ConditionFalse, "IssuerNotFound", `ClusterIssuer "pebble" does not exist`},
			wantStalled: &wantCondition{metav1.ConditionTrue, "IssuerNotFound", `ClusterIssuer "pebble" does not exist`},
			wantIssuing: &wantCondition{metav1.ConditionFalse, "IssuerNotFound", `ClusterIssuer "pebble" does not exist`},
			wantKstatus: status.FailedStatus,
		},
		"stalled renewal keeps the served certificate Ready": {
			ready: renewalDue, order: openOrder, previous: wasIssuing, err: stalled("OrderInvalid", "the CA refused the order"),
			wantReady:   &wantCondition{metav1.ConditionTrue, reasonUpToDate, renewalDue.Message},
			wantStalled: &wantCondition{metav1.ConditionTrue, "OrderInvalid", "the CA refused the order"},
			wantIssuing: &wantCondition{metav1.ConditionFalse, "OrderInvalid", "the CA refused the order"},
			wantKstatus: status.FailedStatus,
		},
		"recovered from a stall": {
			ready: upToDate, order: validOrder,
			previous: []metav1.Condition{
				{Type: typeStalled, Status: metav1.ConditionTrue, Reason: "OrderInvalid", Message: "old"},
				{Type: typeReconciling, Status: metav1.ConditionTrue, Reason: "OrderPending", Message: "old"},
			},
			wantReady:   &wantCondition{metav1.ConditionTrue, reasonUpToDate, upToDate.Message},
			wantKstatus: status.CurrentStatus,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cert := &certpilotv1alpha1.Certificate{}
			cert.Name, cert.Namespace, cert.Generation = "www", "default", 2
			cert.Status.Order = tt.order
			for _, c := range tt.previous {
				c.ObservedGeneration, c.LastTransitionTime = 1, metav1.NewTime(time.Now().Add(-time.Hour))
				cert.Status.Conditions = append(cert.Status.Conditions, c)
			}
			summarizeCertificate(cert, tt.ready, tt.err, time.Now())

			if cert.Status.ObservedGeneration != 2 {
				t.Errorf("observedGeneration = %d, want 2", cert.Status.ObservedGeneration)
			}
			checkCondition(t, cert.Status.Conditions, typeReady, tt.wantReady)
			checkCondition(t, cert.Status.Conditions, typeReconciling, tt.wantReconciling)
			checkCondition(t, cert.Status.Conditions, typeStalled, tt.wantStalled)
			checkCondition(t, cert.Status.Conditions, typeIssuing, tt.wantIssuing)
			if want := countSet(tt.wantReady, tt.wantReconciling, tt.wantStalled, tt.wantIssuing); len(cert.Status.Conditions) != want {
				t.Errorf("conditions = %+v, want exactly the %d listed", cert.Status.Conditions, want)
			}
			if got := kstatusOf(t, cert); got.Status != tt.wantKstatus {
				t.Errorf("kstatus = %s (%s), want %s", got.Status, got.Message, tt.wantKstatus)
			}
		})
	}
}

// TestSummarizeCertificateIsStable: the same outcome twice changes nothing, so the status patch
// is empty and an idle cluster writes nothing.
func TestSummarizeCertificateIsStable(t *testing.T) {
	ready := &metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonUpToDate, Message: "valid"}
	for name, err := range map[string]error{
		"ready":   nil,
		"waiting": wait(time.Second, "OrderPending", "pending"),
		"stalled": stalled("OrderInvalid", "refused"),
	} {
		t.Run(name, func(t *testing.T) {
			cert := &certpilotv1alpha1.Certificate{}
			cert.Generation = 1
			cert.Status.Order = &certpilotv1alpha1.OrderStatus{State: "pending"}
			summarizeCertificate(cert, ready, err, time.Now())
			before := cert.DeepCopy()
			summarizeCertificate(cert, ready, err, time.Now())
			if !equalConditions(before.Status.Conditions, cert.Status.Conditions) {
				t.Errorf("conditions changed on an identical outcome:\nbefore %+v\nafter  %+v", before.Status.Conditions, cert.Status.Conditions)
			}
		})
	}
}

func equalConditions(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
