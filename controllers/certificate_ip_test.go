package controllers

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// TestIPAddressWithTheIssuersDNS01Stalls: admission cannot see the issuer's solver, so an IP
// address whose solver comes from an issuer with dns01 is refused by the controller: Stalled
// IPAddressNeedsHTTP01OrTLSALPN01, naming the address, before any order.
func TestIPAddressWithTheIssuersDNS01Stalls(t *testing.T) {
	h := newCertificateHarness(t, "ip-dns01-")
	cert := &certpilotv1alpha1.Certificate{}
	cert.Namespace, cert.Name = h.namespace, "ip"
	cert.Spec = certpilotv1alpha1.CertificateSpec{
		IPAddresses: []string{"192.0.2.1"}, SecretName: "ip-tls",
		IssuerRef: certpilotv1alpha1.IssuerReference{Name: h.issuer.Name},
	}
	create(t, cert)
	h.reconcileUntil(t, cert, "Stalled IPAddressNeedsHTTP01OrTLSALPN01", func(error) error {
		return stalledCondition(cert, "IPAddressNeedsHTTP01OrTLSALPN01")
	})
	stalled := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled)
	if !strings.Contains(stalled.Message, "192.0.2.1 is an IP address") {
		t.Errorf("message %q, want it to name the address", stalled.Message)
	}
	if requests := h.ca.Stats().Requests["newOrder"]; requests != 0 {
		t.Errorf("the CA saw %d new orders, want none", requests)
	}
	if err := testKube.Client.Get(context.Background(), client.ObjectKeyFromObject(cert), cert); err != nil {
		t.Fatal(err)
	}
	if cert.Status.Order != nil {
		t.Errorf("status order %+v, want none", cert.Status.Order)
	}
}
