package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme/acmetest"
)

// TestIssuerFallbackOnEnvtest: the first issuer's CA answers every request with a 500; the
// certificate is issued by the fallback issuer's CA, and status.issuerRef names that issuer. A
// renewal, once the first CA is back, goes to the first issuer without naming the fallback CA's
// certificate in replaces; the renewal after it, of the first CA's own certificate, names it. A
// reconciler that starts afresh (a restart) continues at the issuer the status records.
func TestIssuerFallbackOnEnvtest(t *testing.T) {
	h := newCertificateHarness(t, "fallback")
	secondCA, second := startSecondIssuer(t, h)

	h.ca.SetFaults([]acmetest.Fault{{From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour), Kind: acmetest.FaultServerError}})
	name := "www.fallback.example"
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "www"},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:           []string{name},
			SecretName:         "www-tls",
			IssuerRef:          certpilotv1alpha1.IssuerReference{Name: h.issuer.Name},
			FallbackIssuerRefs: []certpilotv1alpha1.IssuerReference{{Name: second.Name}},
		},
	}
	create(t, cert)

	// One reconcile meets the outage and moves on; a fresh reconciler (a restart) takes it from there.
	h.reconcileUntilIssued(t, cert, "", func() {
		if cert.Status.CurrentIssuer != nil && cert.Status.CurrentIssuer.Name == second.Name && h.reconciler.steps != nil {
			h.reconciler = &CertificateReconciler{Client: h.client, APIReader: testKube.Client, Accounts: h.accounts,
				Recorder: discardRecorder{}, Solvers: h.reconciler.Solvers}
		}
	})
	if ref := cert.Status.IssuerRef; ref == nil || ref.Name != second.Name || ref.Kind != "Issuer" {
		t.Errorf("status.issuerRef = %+v, want Issuer %s", ref, second.Name)
	}
	if cert.Status.CurrentIssuer != nil {
		t.Errorf("status.currentIssuer = %+v after the issuance, want none", cert.Status.CurrentIssuer)
	}
	if got := h.ca.Stats().Orders[name]; got != 0 {
		t.Errorf("the first CA created %d orders during its outage", got)
	}
	if got := secondCA.Stats().Certificates[name]; got != 1 {
		t.Errorf("the second CA issued %d certificates, want 1", got)
	}
	fallbackSerial := cert.Status.SerialNumber

	// The first CA is back: a renewal starts at the first issuer, without replaces.
	h.ca.SetFaults(nil)
	requestRenewal(t, cert, "back-to-the-first")
	h.reconcileUntilIssued(t, cert, fallbackSerial, nil)
	if ref := cert.Status.IssuerRef; ref == nil || ref.Name != h.issuer.Name {
		t.Errorf("status.issuerRef = %+v after the renewal, want %s", ref, h.issuer.Name)
	}
	if stats := h.ca.Stats(); stats.Certificates[name] != 1 || stats.Replacing != 0 {
		t.Errorf("the first CA issued %d certificates with %d orders naming one in replaces; want 1 and 0 (the second CA issued the one renewed)",
			stats.Certificates[name], stats.Replacing)
	}

	// Renewing the first CA's own certificate names it in replaces, at that CA only.
	requestRenewal(t, cert, "again")
	h.reconcileUntilIssued(t, cert, cert.Status.SerialNumber, nil)
	if got := h.ca.Stats().Replacing; got != 1 {
		t.Errorf("the first CA saw %d orders naming a certificate in replaces, want 1", got)
	}
	if stats := secondCA.Stats(); stats.Replacing != 0 || stats.Orders[name] != 1 {
		t.Errorf("the second CA saw %d orders, %d naming a certificate in replaces; want 1 and 0", stats.Orders[name], stats.Replacing)
	}
}

// reconcileUntilIssued reconciles cert until it is Ready with a certificate other than
// notSerial whose order is valid, calling between (when set) after each reconcile. Failed
// attempts are allowed: falling back is what follows them.
func (h *certificateHarness) reconcileUntilIssued(t *testing.T, cert *certpilotv1alpha1.Certificate, notSerial string, between func()) {
	t.Helper()
	var last error
	eventually(t, "the certificate is issued", func() error {
		_, last = h.reconciler.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(cert)})
		if err := testKube.Client.Get(context.Background(), client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if between != nil {
			between()
		}
		if err := readyCondition(cert); err != nil || cert.Status.SerialNumber == notSerial {
			return fmt.Errorf("%v (serial %q; last reconcile: %v; current issuer %s; %s)", errors.Join(err, errors.New("not renewed")),
				cert.Status.SerialNumber, last, describeIssuer(cert.Status.CurrentIssuer), describeConditions(cert))
		}
		if c := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReady); c == nil {
			return errors.New("no Ready condition")
		}
		return nil
	})
}

// startSecondIssuer starts a second acmetest CA and a Ready Issuer "second" for it in the
// harness's namespace.
func startSecondIssuer(t *testing.T, h *certificateHarness) (*acmetest.CA, *certpilotv1alpha1.Issuer) {
	t.Helper()
	secondCA, err := acmetest.Start(acmetest.Options{Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(secondCA.Close)
	second := &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "second"},
		Spec: certpilotv1alpha1.IssuerSpec{
			ACME: certpilotv1alpha1.ACMEIssuer{
				Server: secondCA.DirectoryURL(), Email: "ops@example.com", CABundle: secondCA.CABundle(),
				PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "second-account"},
			},
			Solver: &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{
				Manual: &certpilotv1alpha1.ManualDNS01{}, Nameservers: []string{secondCA.DNSAddr()},
			}},
		},
	}
	create(t, second)
	issuers := &IssuerReconciler{Client: testKube.Client, Accounts: h.accounts}
	eventually(t, "the second Issuer is Ready", func() error {
		if _, err := issuers.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(second)}); err != nil {
			return err
		}
		if err := testKube.Client.Get(context.Background(), client.ObjectKeyFromObject(second), second); err != nil {
			return err
		}
		return reconciledCondition(second, certpilotv1alpha1.ConditionReady, metav1.ConditionTrue, "AccountRegistered")()
	})

	return secondCA, second
}

// TestIssuerFallbackDropsTheOpenOrder: the first CA fails after the order was opened there and
// recorded in the claim; the issuance moves to the second issuer, which issues with an order of
// its own, and the first CA's order is neither finished nor resumed.
func TestIssuerFallbackDropsTheOpenOrder(t *testing.T) {
	h := newCertificateHarness(t, "fallback-open")
	secondCA, second := startSecondIssuer(t, h)
	name := "open.fallback.example"
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "open"},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:           []string{name},
			SecretName:         "open-tls",
			IssuerRef:          certpilotv1alpha1.IssuerReference{Name: h.issuer.Name},
			FallbackIssuerRefs: []certpilotv1alpha1.IssuerReference{{Name: second.Name}},
		},
	}
	create(t, cert)
	// The claim write records the new order: from then on the first CA times out.
	h.client.before("create", cert.Spec.SecretName+"-certpilot-claim", func(context.Context, any) {
		h.ca.SetFaults([]acmetest.Fault{{From: time.Now().Add(-time.Minute), To: time.Now().Add(time.Hour), Kind: acmetest.FaultTimeout}})
	})
	h.reconcileUntilIssued(t, cert, "", nil)
	if err := h.client.hookRan("create", cert.Spec.SecretName+"-certpilot-claim"); err != nil {
		t.Fatal(err)
	}
	if ref := cert.Status.IssuerRef; ref == nil || ref.Name != second.Name {
		t.Errorf("status.issuerRef = %+v, want Issuer %s", ref, second.Name)
	}
	if stats := h.ca.Stats(); stats.Orders[name] != 1 || stats.Certificates[name] != 0 {
		t.Errorf("the first CA has %d orders and issued %d certificates; want the one order, never finished", stats.Orders[name], stats.Certificates[name])
	}
	if got := secondCA.Stats().Orders[name]; got != 1 {
		t.Errorf("the second CA has %d orders, want 1", got)
	}
	if strings.Contains(cert.Status.Order.URL, strings.TrimSuffix(h.ca.DirectoryURL(), "/directory")) {
		t.Errorf("status.order %s is the first CA's", cert.Status.Order.URL)
	}
}
