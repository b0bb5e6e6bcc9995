package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
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

// TestIssuerSwitchedToAnotherCA: the ClusterIssuer is pointed at another CA (a second Pebble,
// as staging is swapped for production). Every certificate it issued is reissued once by the new
// CA (exactly one order each there), each with a Normal event that says why, and nothing is
// ordered after that.
func TestIssuerSwitchedToAnotherCA(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-switch", 0)
	var certs []*certpilotv1alpha1.Certificate
	first := map[string]string{}
	for i := range 3 {
		name := fmt.Sprintf("switch-%d", i)
		cert := s.TLSALPN01Certificate(name, name+".test")
		if err := kube.Client.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
	for _, cert := range certs {
		waitReady(t, cert, 2*time.Minute, "")
		first[cert.Name] = cert.Status.SerialNumber
	}

	// The second CA validates through the same edge: its validation authority dials the same
	// ports.
	second := testenv.StartPebble(t, testenv.PebbleOptions{HTTPPort: s.Pebble.HTTPPort, TLSPort: s.Pebble.TLSPort})
	issuer := &certpilotv1alpha1.ClusterIssuer{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Name: s.Issuer}, issuer); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(issuer.DeepCopy())
	issuer.Spec.ACME.Server, issuer.Spec.ACME.CABundle = second.DirectoryURL(), second.CABundle
	if err := kube.Client.Patch(ctx, issuer, patch); err != nil {
		t.Fatal(err)
	}

	for _, cert := range certs {
		waitReady(t, cert, 2*time.Minute, first[cert.Name])
		_, secret := verifySecret(t, second, cert)
		if got := secret.Annotations["certpilot.dev/acme-server"]; got != second.DirectoryURL() {
			t.Errorf("%s: the Secret records ACME server %q, want the new CA %s", cert.Name, got, second.DirectoryURL())
		}
		waitForEvents(t, cert, 30*time.Second, "IssuerServerChanged", "Renewed")
	}
	if n := second.OrderCount(); n != len(certs) {
		t.Errorf("the new CA saw %d orders, want one per certificate (%d)", n, len(certs))
	}
	// Look at every certificate once more: nothing is ordered again.
	for _, cert := range certs {
		pokeAndWaitForReconcile(t, s, cert)
	}
	if n := second.OrderCount(); n != len(certs) {
		t.Errorf("the new CA saw %d orders after the certificates were looked at again, want %d", n, len(certs))
	}
	for _, cert := range certs {
		var events eventsv1.EventList
		if err := kube.Client.List(ctx, &events, client.InNamespace(cert.Namespace)); err != nil {
			t.Fatal(err)
		}
		count := 0
		for _, event := range events.Items {
			if event.Regarding.UID == cert.UID && event.Reason == "IssuerServerChanged" {
				count++
				if event.Type != corev1.EventTypeNormal || !strings.Contains(event.Note, second.DirectoryURL()) {
					t.Errorf("%s: event %s %q, want a Normal event naming the new CA", cert.Name, event.Type, event.Note)
				}
			}
		}
		if count != 1 {
			t.Errorf("%s: %d IssuerServerChanged events, want 1", cert.Name, count)
		}
	}
}

// TestAlreadyReplacedOrdersOnceMore: a certificate that was replaced already comes back into
// its Secret (restored from a backup, re-synced by a GitOps tool). Its renewal order names it in
// `replaces`, Pebble refuses that as alreadyReplaced, and certpilot orders once more without it:
// exactly one more order, then Ready with a new certificate.
func TestAlreadyReplacedOrdersOnceMore(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-replaced", 0)
	cert := s.TLSALPN01Certificate("replaced", "replaced.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	first := cert.Status.SerialNumber
	backup := &corev1.Secret{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, backup); err != nil {
		t.Fatal(err)
	}
	renew := func(request string) {
		t.Helper()
		patch := client.MergeFrom(cert.DeepCopy())
		cert.Annotations = map[string]string{certpilotv1alpha1.AnnotationRenew: request}
		if err := kube.Client.Patch(ctx, cert, patch); err != nil {
			t.Fatal(err)
		}
	}
	renew("first-renewal") // replaces the first certificate
	waitReady(t, cert, 2*time.Minute, first)

	// The first certificate is restored into the Secret, and looked at.
	secret := &corev1.Secret{}
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(backup), secret); err != nil {
		t.Fatal(err)
	}
	secret.Data, secret.Annotations = backup.Data, backup.Annotations
	if err := kube.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "the restored certificate in the status", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if cert.Status.SerialNumber != first {
			return fmt.Errorf("status serial %s, want the restored %s", cert.Status.SerialNumber, first)
		}
		return nil
	})
	ordersBefore := s.Pebble.OrderCount()
	logsBefore := len(s.Manager.Output())
	renew("renew-the-restored")
	waitReady(t, cert, 2*time.Minute, first)
	if n := s.Pebble.OrderCount() - ordersBefore; n != 1 {
		t.Errorf("Pebble saw %d orders for the renewal of a certificate replaced already, want exactly 1", n)
	}
	if !strings.Contains(s.Manager.Output()[logsBefore:], "replaced already; ordering without replaces") {
		t.Errorf("the manager never met alreadyReplaced; its output:\n%s", s.Manager.Output()[logsBefore:])
	}
	verifySecret(t, s.Pebble, cert)
}
