package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestEdgeServesOnlyIssued: on a shared platform the edge serves, for a name, only the
// certificate certpilot issued for it. Tenants' Secrets with certpilot's labels and a later
// NotAfter for that name, in the Certificate's namespace or another one the edge watches, are
// refused and counted, and handshakes go on getting the issued certificate; the claim Secret,
// which holds a private key, is never held by the edge.
func TestEdgeServesOnlyIssued(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := testenv.Namespace(t, "e2e-edge-tenancy")
	tenant := testenv.Namespace(t, "e2e-edge-tenancy-b")
	if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenant}}); err != nil {
		t.Fatal(err)
	}
	health := testenv.FreeAddress(t)
	s := startStackOptions(t, "e2e-edge-tenancy", testenv.PebbleOptions{NonceRejectPercent: 5}, testenv.StackOptions{
		EdgeArgs: []string{"--certificate-namespaces", namespace + "," + tenant, "--health-bind-address", health},
	})
	edgeAddress := fmt.Sprintf("127.0.0.1:%d", s.Pebble.TLSPort)
	metric := func(name string, labels map[string]string) float64 {
		families, err := scrape(health)
		if err != nil {
			t.Fatal(err)
		}
		value, _ := find(families[name], labels)
		return value
	}
	served := func() (string, error) {
		leaf, err := edgetest.ServedLeaf(ctx, edgeAddress, "shop.team-a.test")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%x", leaf.SerialNumber), nil
	}

	cert := s.TLSALPN01Certificate("shop", "shop.team-a.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 3*time.Minute, "")
	testenv.Eventually(t, 30*time.Second, "the issued certificate served", func() error {
		serial, err := served()
		if err != nil || serial != cert.Status.SerialNumber {
			return fmt.Errorf("served serial %q (%v), want %s", serial, err, cert.Status.SerialNumber)
		}
		return nil
	})
	// The claim Secret exists and holds a key; the edge holds only the certificate Secret.
	claim := &corev1.Secret{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: cert.Spec.SecretName + certpilotv1alpha1.ClaimSecretSuffix}, claim); err != nil {
		t.Fatalf("the claim Secret: %v", err)
	}
	if got := metric("certpilot_edge_cached_secrets", nil); got != 1 {
		t.Errorf("certpilot_edge_cached_secrets = %v with the certificate Secret and its claim, want 1", got)
	}

	// Tenants make Secrets with certpilot's labels, self-signed for the same name and valid
	// until 9999: one in the Certificate's namespace, one in another watched namespace, and
	// one that claims to be controlled by the Certificate.
	forever := func() map[string][]byte {
		certificate := edgetest.CertificateValid(t, time.Now().Add(-time.Hour), time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), "shop.team-a.test")
		return map[string][]byte{corev1.TLSCertKey: edgetest.ChainPEM(certificate), corev1.TLSPrivateKeyKey: edgetest.KeyPEM(t, certificate)}
	}
	// The manager writes the Secret before the status: the first issuance may have counted one
	// serial_not_issued already.
	refused := func(reason string) float64 {
		return metric("certpilot_edge_certificates_refused_total", map[string]string{"reason": reason})
	}
	notControlledBefore, notIssuedBefore := refused("not_controlled"), refused("serial_not_issued")
	labels := map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue, certpilotv1alpha1.LabelCertificate: "shop"}
	controller := true
	tenantSecrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "shop-tenant-tls", Labels: labels}, Type: corev1.SecretTypeTLS, Data: forever()},
		{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: "shop-tls", Labels: labels}, Type: corev1.SecretTypeTLS, Data: forever()},
		{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "shop-forged-tls", Labels: labels, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate", Name: cert.Name, UID: cert.UID, Controller: &controller,
		}}}, Type: corev1.SecretTypeTLS, Data: forever()},
	}
	for _, secret := range tenantSecrets {
		if err := kube.Client.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, "the tenants' Secrets refused", func() error {
		notControlled := refused("not_controlled") - notControlledBefore
		notIssued := refused("serial_not_issued") - notIssuedBefore
		if notControlled != 2 || notIssued != 1 {
			return fmt.Errorf("refused not_controlled %v, serial_not_issued %v more; want 2 and 1", notControlled, notIssued)
		}
		return nil
	})
	for range 5 {
		if serial, err := served(); err != nil || serial != cert.Status.SerialNumber {
			t.Fatalf("after the tenants' Secrets: served serial %q (%v), want the issued %s", serial, err, cert.Status.SerialNumber)
		}
	}
	if got := metric("certpilot_edge_certificates", nil); got != 1 {
		t.Errorf("certpilot_edge_certificates = %v, want 1 (the issued certificate only)", got)
	}
	if got := metric("certpilot_edge_cached_secrets", nil); got != 4 {
		t.Errorf("certpilot_edge_cached_secrets = %v, want 4 (the certificate Secret and the tenants' three, not the claim)", got)
	}
}
