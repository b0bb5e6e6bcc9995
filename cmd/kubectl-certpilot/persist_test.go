package main

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestDNSPersist: `dns` prints the dns-persist-01 records ready to paste into a zone file,
// from the challenges and from a condition that asks to update one; `ls` marks a Certificate
// whose record expires before its next renewal.
func TestDNSPersist(t *testing.T) {
	testenv.SkipIfShort(t)
	createNamespace(t, "persist")
	value := "pebble.letsencrypt.org; accounturi=https://ca.example/acct/1; policy=wildcard"
	reason := `TXT record _validation-persist.example.com. with the value "` + value + `" is not visible at 10.0.0.53:53: create it once, certpilot then issues and renews by itself`
	status := &certpilotv1alpha1.CertificateStatus{
		Conditions: []metav1.Condition{{
			Type: certpilotv1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: "PersistRecordRequired",
			Message: "Waiting for 2 of 2 dns-persist-01 records (dns01 persist): " + reason, LastTransitionTime: metav1.Time{Time: now},
		}},
		Order: &certpilotv1alpha1.OrderStatus{URL: "https://ca.example/order/1", State: "pending", Challenges: []certpilotv1alpha1.ChallengeStatus{
			{DNSName: "*.example.com", Type: "dns-persist-01", State: "self-check-failed", Reason: reason},
			{DNSName: "example.com", Type: "dns-persist-01", State: "self-check-failed", Reason: reason},
		}},
	}
	createCertificate(t, "persist", "wildcard", status)
	out := mustRun(t, "dns", "wildcard", "-n", "persist")
	line := `_validation-persist.example.com. 3600 IN TXT "` + value + `"`
	if !strings.Contains(out, "_validation-persist.example.com   self-check-failed") || strings.Count(out, line) != 1 {
		t.Errorf("dns:\n%s\nwant both challenges and the zone file line once:\n%s", out, line)
	}

	// Before an order, only the condition names the record to update.
	updated := "letsencrypt.org; accounturi=https://ca.example/acct/2"
	createCertificate(t, "persist", "moved", &certpilotv1alpha1.CertificateStatus{Conditions: []metav1.Condition{{
		Type: certpilotv1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: "PersistRecordAccountMismatch",
		Message: `1 dns-persist-01 records must be updated before certpilot orders a certificate: TXT record _validation-persist.moved.example.com. at 10.0.0.53:53 must be updated to the value "` +
			updated + `": it names account https://ca.example/acct/1, but the issuer's ACME account is https://ca.example/acct/2`,
		LastTransitionTime: metav1.Time{Time: now},
	}}})
	if out := mustRun(t, "dns", "moved", "-n", "persist"); !strings.Contains(out, `_validation-persist.moved.example.com. 3600 IN TXT "`+updated+`"`) {
		t.Errorf("dns before an order:\n%s", out)
	}

	expiring := issuedStatus(now.Add(30*24*time.Hour), metav1.ConditionTrue, true)
	expiring.Conditions = append(expiring.Conditions, metav1.Condition{
		Type: certpilotv1alpha1.ConditionPersistRecordExpiring, Status: metav1.ConditionTrue, Reason: "PersistUntilBeforeRenewal",
		Message: "…", LastTransitionTime: metav1.Time{Time: now},
	})
	createCertificate(t, "persist", "expiring", expiring)
	out = mustRun(t, "ls", "-n", "persist")
	for _, row := range strings.Split(out, "\n") {
		if strings.HasPrefix(row, "expiring ") && !strings.Contains(row, "true (record expiring)") {
			t.Errorf("ls does not mark the expiring record: %q", row)
		}
	}
	if !strings.Contains(out, "true (record expiring)") {
		t.Errorf("ls:\n%s", out)
	}
}
