package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"
	"testing"

	xacme "golang.org/x/crypto/acme"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestIssuerSpecChangeRegistersAfterTransientFailure: when the first registration after a spec
// change fails transiently, the retry must register again instead of reporting the account of
// the previous spec as Ready.
func TestIssuerSpecChangeRegistersAfterTransientFailure(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	first := testenv.StartPebble(t, testenv.PebbleOptions{})
	// Every nonce is rejected: the directory answers, every newAccount fails with badNonce, a
	// transient error.
	failing := testenv.StartPebble(t, testenv.PebbleOptions{NonceRejectPercent: 100})
	m := startIssuerManager(t)
	namespace := createNamespace(t, "issuer-")

	issuer := &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "moving", Namespace: namespace},
		Spec:       pebbleIssuerSpec(first, "moving-account"),
	}
	create(t, issuer)
	waitForIssuer(t, issuer, "Issuer Ready at the first CA", reconciledCondition(issuer, typeReady, metav1.ConditionTrue, "AccountRegistered"))
	firstAccount := issuer.Status.AccountURI

	base := issuer.DeepCopy()
	issuer.Spec.ACME.Server, issuer.Spec.ACME.CABundle = failing.DirectoryURL(), failing.CABundle
	if err := testKube.Client.Patch(ctx, issuer, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	// Wait for several failed registrations, or for the issuer to claim Ready.
	waitForIssuer(t, issuer, "registration at the failing CA retried", func() error {
		if meta.IsStatusConditionTrue(issuer.Status.Conditions, typeReady) && issuer.Status.ObservedGeneration == issuer.Generation {
			return nil
		}
		if n := m.Issuers.Backoffs(issuer); n < 3 {
			return fmt.Errorf("%d backoffs", n)
		}
		return nil
	})
	if meta.IsStatusConditionTrue(issuer.Status.Conditions, typeReady) {
		t.Errorf("Issuer Ready with account %s (first CA %s) though no account could be registered at %s: %s",
			issuer.Status.AccountURI, firstAccount, failing.DirectoryURL(), describeStatus(issuer))
	}
}

// TestIssuerEmailChangeUpdatesAccountContact: a new spec.acme.email reaches the CA's account,
// or the issuer would be Ready for a generation whose contact the CA never got.
func TestIssuerEmailChangeUpdatesAccountContact(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	startIssuerManager(t)
	namespace := createNamespace(t, "issuer-")

	issuer := &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "contact", Namespace: namespace},
		Spec:       pebbleIssuerSpec(pebble, "contact-account"),
	}
	create(t, issuer)
	waitForIssuer(t, issuer, "Issuer Ready", reconciledCondition(issuer, typeReady, metav1.ConditionTrue, "AccountRegistered"))
	base := issuer.DeepCopy()
	issuer.Spec.ACME.Email = "security@example.com"
	if err := testKube.Client.Patch(ctx, issuer, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitForIssuer(t, issuer, "Issuer Ready for the new email", reconciledCondition(issuer, typeReady, metav1.ConditionTrue, "AccountRegistered"))

	key, err := pki.DecodePrivateKey(getSecret(t, namespace, "contact-account").Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pebble.CABundle)
	ca := &xacme.Client{Key: key, DirectoryURL: pebble.DirectoryURL(), HTTPClient: &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
	}}
	account, err := ca.GetReg(ctx, "")
	if err != nil {
		t.Fatalf("Looking up the account at Pebble: %v", err)
	}
	if !slices.Equal(account.Contact, []string{"mailto:security@example.com"}) {
		t.Errorf("the account's contact at the CA is %v after spec.acme.email changed to security@example.com", account.Contact)
	}
}
