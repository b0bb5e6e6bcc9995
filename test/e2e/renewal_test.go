package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestRenewalFollowsTheCAsWindow: when the CA moves a certificate's renewal window (ACME
// Renewal Information, as after a mass revocation), certpilot renews inside it, and the
// renewal order names the certificate it replaces, which Pebble accepts.
func TestRenewalFollowsTheCAsWindow(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-ari", time.Hour)

	cert := s.TLSALPN01Certificate("ari", "ari.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	first := cert.Status.SerialNumber
	if cert.Status.RenewalInfo == nil || cert.Status.RenewalInfo.WindowStart == nil {
		t.Fatalf("no renewal window in the status of a certificate from Pebble, which publishes ARI: %+v", cert.Status)
	}
	secret := &corev1.Secret{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, secret); err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	certID, err := acme.CertID(leaf)
	if err != nil {
		t.Fatal(err)
	}

	// The CA asks for renewal now: a window that opened a minute ago.
	start, end := time.Now().Add(-time.Minute).UTC(), time.Now().Add(time.Minute).UTC()
	if err := s.Pebble.SetRenewalInfo(secret.Data[corev1.TLSCertKey], fmt.Sprintf(
		`{"suggestedWindow":{"start":%q,"end":%q},"explanationURL":"https://ca.example/incident"}`,
		start.Format(time.RFC3339), end.Format(time.RFC3339))); err != nil {
		t.Fatal(err)
	}
	// Time passes until the next fetch the CA's Retry-After allowed (set in the status, as the
	// clock would), and the Certificate is looked at.
	patch := client.MergeFrom(cert.DeepCopy())
	cert.Status.RenewalInfo.NextFetch = &metav1.Time{Time: time.Now().Add(-time.Second).Truncate(time.Second)}
	if err := kube.Client.Status().Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	logsBefore := len(s.Manager.Output())
	pokeAndWaitForReconcile(t, s, cert)

	waitReady(t, cert, 2*time.Minute, first)
	renewedAt := time.Now()
	if renewedAt.Before(start) || renewedAt.After(end.Add(time.Minute)) {
		t.Errorf("renewed at %s, outside the CA's window %s..%s", renewedAt, start, end)
	}
	var order string
	for _, line := range strings.Split(s.Manager.Output()[logsBefore:], "\n") {
		if strings.Contains(line, `"msg":"Created ACME order"`) && strings.Contains(line, `"name":"ari"`) {
			order = line
		}
	}
	if !strings.Contains(order, `"replaces":"`+certID+`"`) {
		t.Errorf("the renewal order does not name the certificate it replaces (%s): %s", certID, order)
	}
	waitForEvents(t, cert, 30*time.Second, "Renewed")
	verifySecret(t, s.Pebble, cert)
}

// TestCAThatForgotTheAccount: the CA is reset (Pebble restarted on the same directory URL: every
// account and order gone). A renewal requested afterwards registers the key again and is issued
// with exactly one fresh order, never a permanent stall.
func TestCAThatForgotTheAccount(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-careset", 0)
	cert := s.TLSALPN01Certificate("reset", "reset.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	first := cert.Status.SerialNumber
	ordersBefore := s.Pebble.OrderCount() // Pebble's log, kept across the restart

	if err := s.Pebble.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(cert.DeepCopy())
	cert.Annotations = map[string]string{certpilotv1alpha1.AnnotationRenew: "after-the-reset"}
	if err := kube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, first)
	waitForEvents(t, cert, 30*time.Second, "AccountReregistered", "Renewed")
	if n := s.Pebble.OrderCount() - ordersBefore; n != 1 {
		t.Errorf("the reset CA saw %d orders, want exactly one fresh order", n)
	}
	if cert.Status.FailedIssuanceAttempts != 0 {
		t.Errorf("failedIssuanceAttempts = %d after recovering", cert.Status.FailedIssuanceAttempts)
	}
}
