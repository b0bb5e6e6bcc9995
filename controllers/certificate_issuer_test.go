package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/controller-runtime/pkg/client"

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
		"granted namespace, name in its zone":     {issuer: shared, namespace: teamA, names: []string{"shop.a.example"}},
		"granted namespace, wildcard in zone":     {issuer: shared, namespace: teamA, names: []string{"*.a.example"}},
		"granted namespace, another team's name":  {issuer: shared, namespace: teamA, names: []string{"shop.a.example", "shop.b.example"}, wantReason: policy.ReasonDNSNameNotAllowed},
		"namespace the selector leaves out":       {issuer: shared, namespace: teamB, names: []string{"shop.b.example"}, wantReason: policy.ReasonNamespaceNotAllowed},
		"namespace that does not exist":           {issuer: shared, namespace: "gone-namespace", names: []string{"shop.a.example"}, wantReason: policy.ReasonNamespaceNotAllowed},
		"a ClusterIssuer without a policy":        {issuer: open, namespace: teamB, names: []string{"anything.example"}},
		"a namespaced Issuer":                     {issuer: own, namespace: teamB, names: []string{"anything.example"}},
		"granted namespace, an IP address":        {issuer: shared, namespace: teamA, names: []string{"shop.a.example", "192.0.2.1"}, wantReason: policy.ReasonDNSNameNotAllowed},
		"a ClusterIssuer without a policy, an IP": {issuer: open, namespace: teamB, names: []string{"192.0.2.1", "::1"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cert := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: tt.namespace, Name: "www"}}
			cert.Spec.DNSNames, cert.Spec.IPAddresses = certpilotv1alpha1.SplitIdentifiers(tt.names)
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

// TestTooManyNamesForProfile: a Certificate with more names than its issuer's profile accepts in
// one order (tlsserver: 25) stalls with a message saying so, before any order is created; with
// 25 names it is issued.
func TestTooManyNamesForProfile(t *testing.T) {
	h := newCertificateHarnessWithProfile(t, "profile-limit", "tlsserver")
	names := make([]string, 26)
	for i := range names {
		names[i] = fmt.Sprintf("n%02d.harness.example", i)
	}
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "many"},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames: names, SecretName: "many-tls",
			IssuerRef: certpilotv1alpha1.IssuerReference{Name: h.issuer.Name},
		},
	}
	create(t, cert)
	h.reconcileUntil(t, cert, "Stalled: too many names for the profile", func(error) error {
		return stalledCondition(cert, reasonTooManyNamesForProfile)
	})
	stalled := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled)
	for _, want := range []string{"26 names", `profile "tlsserver"`, "at most 25", `Issuer "acmetest"`} {
		if !strings.Contains(stalled.Message, want) {
			t.Errorf("Stalled message %q does not say %q", stalled.Message, want)
		}
	}
	if orders := h.ca.Stats().Requests["newOrder"]; orders != 0 || cert.Status.Order != nil {
		t.Errorf("%d orders created (status order %+v), want none", orders, cert.Status.Order)
	}

	eventually(t, "drop a name", func() error {
		if err := testKube.Client.Get(context.Background(), client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		cert.Spec.DNSNames = names[:25]
		return testKube.Client.Update(context.Background(), cert)
	})
	h.issue(t, cert)
}
