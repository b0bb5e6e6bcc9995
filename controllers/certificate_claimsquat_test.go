package controllers

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestClaimSquattedCostsNoOrder: an ordinary Secret (no certpilot label, no owner) that holds
// the name of a Certificate's claim stops the Certificate (Stalled SecretNotOwned) before any
// order, and touching the Certificate's annotations orders nothing either; the Secret is not
// written. Once it is gone, one order issues the certificate.
func TestClaimSquattedCostsNoOrder(t *testing.T) {
	h := newCertificateHarness(t, "squat-")
	ctx := context.Background()
	const name = "squatted"
	squatterData := map[string][]byte{"note": []byte("mine")}
	squatter := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: claimSecretName(name + "-tls")}, Data: squatterData}
	create(t, squatter)
	cert := h.newCertificate(t, name)
	dnsName := cert.Spec.DNSNames[0]

	h.reconcileUntil(t, cert, "Stalled SecretNotOwned", func(error) error { return stalledCondition(cert, "SecretNotOwned") })
	for i, value := range []string{"1", "2", "3"} {
		patch := client.MergeFrom(cert.DeepCopy())
		if cert.Annotations == nil {
			cert.Annotations = map[string]string{}
		}
		cert.Annotations["example.com/touched"] = value
		if err := testKube.Client.Patch(ctx, cert, patch); err != nil {
			t.Fatal(err)
		}
		h.reconcileUntil(t, cert, "still Stalled after touch "+value, func(error) error { return stalledCondition(cert, "SecretNotOwned") })
		if orders := h.ca.Stats().Orders[dnsName]; orders != 0 {
			t.Fatalf("after %d touches the CA saw %d orders for %s; want 0", i+1, orders, dnsName)
		}
	}
	got := getSecret(t, h.namespace, squatter.Name)
	if len(got.Labels) != 0 || len(got.OwnerReferences) != 0 || len(got.Data) != 1 || string(got.Data["note"]) != "mine" {
		t.Errorf("the squatting Secret was written: labels %v, owners %v, %d data keys", got.Labels, got.OwnerReferences, len(got.Data))
	}
	if n := h.client.count("create", squatter.Name); n != 0 {
		t.Errorf("%d creates of the claim tried; want none while the squatter is there", n)
	}

	if err := testKube.Client.Delete(ctx, got); err != nil {
		t.Fatal(err)
	}
	h.issue(t, cert)
	if orders := h.ca.Stats().Orders[dnsName]; orders != 1 {
		t.Errorf("the CA saw %d orders for %s once the squatter was gone; want 1", orders, dnsName)
	}
}
