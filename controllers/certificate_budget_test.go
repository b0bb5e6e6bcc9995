package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// TestAccountOf: the budget's account is the one the issuer's status records, the same for every
// reconcile (a client learns its URL only with its first signed request); without it, the
// issuer, a namespaced Issuer with its namespace.
func TestAccountOf(t *testing.T) {
	registered := &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "shared"}}
	registered.Status.AccountURI = "https://ca.example/acct/7"
	tests := map[string]struct {
		issuer certpilotv1alpha1.GenericIssuer
		ref    certpilotv1alpha1.IssuerReference
		want   string
	}{
		"registered":                    {registered, certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "shared"}, "https://ca.example/acct/7"},
		"a ClusterIssuer not registered": {nil, certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "shared"}, "ClusterIssuer/shared"},
		"an Issuer not registered":      {nil, certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "own"}, "Issuer/team-a/own"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			run := &certificateRun{cert: &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a"},
				Spec: certpilotv1alpha1.CertificateSpec{IssuerRef: tc.ref}}, issuer: tc.issuer}
			if got := accountOf(run); got != tc.want {
				t.Errorf("accountOf = %q, want %q", got, tc.want)
			}
		})
	}
}
