package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// TestCacheHoldsOnlyCertificateSecrets: a tenant's Secret labelled as certpilot's enters the
// manager's cache as metadata only (no data, no annotations), while the certificate Secret a
// Certificate controls is cached whole. A labelled Secret left on a claim's name, which the
// cache shows without its claim annotation, is still recognised from the API as a stale claim
// and taken over: one order issues the certificate.
func TestCacheHoldsOnlyCertificateSecrets(t *testing.T) {
	h := newCertificateHarness(t, "cache-")
	ctx := context.Background()
	const name = "cached"
	managed := map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue}
	tenantData := map[string][]byte{"config": []byte("db_password=hunter2\n" + strings.Repeat("x", 512<<10))}
	tenant := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "tenant-labelled", Labels: managed,
			Annotations: map[string]string{"tenant.example/note": "mine"}},
		Data: tenantData,
	}
	create(t, tenant)
	staleClaim := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: claimSecretName(name + "-tls"),
			Labels:      map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue, certpilotv1alpha1.LabelClaim: "true"},
			Annotations: map[string]string{annotationClaimOf: name + "-tls"}},
		Data: map[string][]byte{corev1.TLSPrivateKeyKey: []byte("not a key")},
	}
	create(t, staleClaim)

	for _, secret := range []*corev1.Secret{tenant, staleClaim} {
		eventually(t, "the cache holds "+secret.Name+" as metadata only", func() error {
			cached := &corev1.Secret{}
			if err := h.cached.Get(ctx, client.ObjectKeyFromObject(secret), cached); err != nil {
				return err
			}
			if cached.Data != nil || cached.Annotations != nil {
				t.Fatalf("the cache holds %d data keys and annotations %v of %s; want metadata only", len(cached.Data), cached.Annotations, secret.Name)
			}
			if cached.UID != secret.UID || cached.Labels[certpilotv1alpha1.LabelManagedBy] != certpilotv1alpha1.ManagedByValue {
				return fmt.Errorf("cached uid %s labels %v", cached.UID, cached.Labels)
			}
			return nil
		})
	}

	cert := h.newCertificate(t, name)
	issued := h.issue(t, cert)
	if orders := h.ca.Stats().Orders[cert.Spec.DNSNames[0]]; orders != 1 {
		t.Errorf("the CA saw %d orders; want 1", orders)
	}
	cached := &corev1.Secret{}
	if err := h.cached.Get(ctx, client.ObjectKeyFromObject(issued), cached); err != nil {
		t.Fatal(err)
	}
	if len(cached.Data[corev1.TLSCertKey]) == 0 || cached.Annotations[annotationIssuerName] == "" {
		t.Errorf("the certificate Secret is cached without its certificate (%d data keys) or annotations %v", len(cached.Data), cached.Annotations)
	}
	if got := getSecret(t, h.namespace, tenant.Name); string(got.Data["config"]) != string(tenantData["config"]) || len(got.OwnerReferences) != 0 {
		t.Errorf("the tenant's Secret was written")
	}
}
