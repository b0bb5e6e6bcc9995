package controllers

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/policy"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestIssuerPolicyDecision: a ClusterIssuer's policy is applied to the labels and the zone
// annotation of the Certificate's Namespace as the apiserver holds it; an Issuer, or a
// ClusterIssuer without a policy, grants its names without reading anything.
func TestIssuerPolicyDecision(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	newNamespace := func(labels, annotations map[string]string) string {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "policy-", Labels: labels, Annotations: annotations}}
		if err := testKube.Client.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = testKube.Client.Delete(context.Background(), ns) })
		return ns.Name
	}
	teamA := newNamespace(map[string]string{"tenant": "a"}, map[string]string{certpilotv1alpha1.AnnotationAllowedDNSZones: "a.example"})
	teamB := newNamespace(map[string]string{"tenant": "b"}, nil)
	shared := &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "shared"}}
	shared.Spec.Policy = &certpilotv1alpha1.IssuerPolicy{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "a"}},
		NamespaceDNSZones: certpilotv1alpha1.NamespaceDNSZonesRequire,
	}
	open := &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "open"}}
	own := &certpilotv1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Name: "own", Namespace: teamB}}

	tests := map[string]struct {
		issuer     certpilotv1alpha1.GenericIssuer
		namespace  string
		names      []string
		wantReason string // "" for allowed
	}{
		"granted namespace, name in its zone":    {issuer: shared, namespace: teamA, names: []string{"shop.a.example"}},
		"granted namespace, wildcard in zone":    {issuer: shared, namespace: teamA, names: []string{"*.a.example"}},
		"granted namespace, another team's name": {issuer: shared, namespace: teamA, names: []string{"shop.a.example", "shop.b.example"}, wantReason: policy.ReasonDNSNameNotAllowed},
		"namespace the selector leaves out":      {issuer: shared, namespace: teamB, names: []string{"shop.b.example"}, wantReason: policy.ReasonNamespaceNotAllowed},
		"namespace that does not exist":          {issuer: shared, namespace: "gone-namespace", names: []string{"shop.a.example"}, wantReason: policy.ReasonNamespaceNotAllowed},
		"a ClusterIssuer without a policy":       {issuer: open, namespace: teamB, names: []string{"anything.example"}},
		"a namespaced Issuer":                    {issuer: own, namespace: teamB, names: []string{"anything.example"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cert := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: tt.namespace, Name: "www"}}
			cert.Spec.DNSNames = tt.names
			decision, err := issuerPolicyDecision(ctx, testKube.Client, tt.issuer, cert)
			if err != nil {
				t.Fatal(err)
			}
			if decision.Allowed != (tt.wantReason == "") || decision.Reason != tt.wantReason {
				t.Errorf("decision %+v, want reason %q", decision, tt.wantReason)
			}
			if !decision.Allowed && decision.Message == "" {
				t.Error("a refusal without a message")
			}
		})
	}
}
