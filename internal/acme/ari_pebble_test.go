package acme_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestRenewalInfo fetches ARI windows that Pebble's management interface sets, and Pebble's own
// default, and refuses malformed ones.
func TestRenewalInfo(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	client := registeredClient(t, ctx, pebble)
	if !client.SupportsRenewalInfo() {
		t.Fatal("SupportsRenewalInfo() = false, want true: Pebble's directory has renewalInfo")
	}
	names := []string{"ari.example.test"}
	chain, _ := issue(t, ctx, client, names, "", dns01Solver(client, pebble))
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	certID, err := acme.CertID(leaf)
	if err != nil {
		t.Fatal(err)
	}

	// Pebble's default window lies inside the certificate's lifetime.
	info, err := client.RenewalInfo(ctx, leaf)
	if err != nil {
		t.Fatalf("RenewalInfo (Pebble's default window): %v", err)
	}
	if info.CertID != certID {
		t.Errorf("RenewalInfo CertID = %q, want %q", info.CertID, certID)
	}
	if info.WindowStart.Before(leaf.NotBefore) || info.WindowEnd.After(leaf.NotAfter) || !info.WindowEnd.After(info.WindowStart) {
		t.Errorf("default window [%v, %v) is not inside the lifetime [%v, %v]", info.WindowStart, info.WindowEnd, leaf.NotBefore, leaf.NotAfter)
	}
	if info.RetryAfter != 6*time.Hour {
		t.Errorf("RetryAfter = %v, want Pebble's 6h", info.RetryAfter)
	}

	start := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	end := start.Add(24 * time.Hour)
	past := time.Now().Add(-72 * time.Hour).UTC().Truncate(time.Second)
	window := func(start, end time.Time) string {
		return fmt.Sprintf(`{"suggestedWindow":{"start":%q,"end":%q},"explanationURL":"https://ca.example.test/why"}`,
			start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	tests := []struct {
		name       string
		response   string
		start, end time.Time
		malformed  bool
	}{
		{name: "window in the future", response: window(start, end), start: start, end: end},
		{name: "window in the past", response: window(past, past.Add(time.Hour)), start: past, end: past.Add(time.Hour)},
		{name: "end before start", response: window(end, start), malformed: true},
		{name: "unparsable time", response: `{"suggestedWindow":{"start":"soon","end":"later"}}`, malformed: true},
		{name: "not JSON", response: `this is not JSON`, malformed: true},
	}
	// One certificate, so the cases run in order.
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := pebble.SetRenewalInfo(pki.EncodeChain(chain[:1]), tc.response); err != nil {
				t.Fatal(err)
			}
			info, err := client.RenewalInfo(ctx, leaf)
			if tc.malformed {
				if !errors.Is(err, acme.ErrMalformedRenewalInfo) {
					t.Fatalf("RenewalInfo = %+v, %v; want ErrMalformedRenewalInfo", info, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !info.WindowStart.Equal(tc.start) || !info.WindowEnd.Equal(tc.end) {
				t.Errorf("RenewalInfo window = [%v, %v), want [%v, %v)", info.WindowStart, info.WindowEnd, tc.start, tc.end)
			}
			if info.ExplanationURL != "https://ca.example.test/why" {
				t.Errorf("ExplanationURL = %q", info.ExplanationURL)
			}
		})
	}

	// A certificate Pebble did not issue: an ACME problem, not a malformed window.
	other := *leaf
	other.SerialNumber = leaf.SerialNumber.Add(leaf.SerialNumber, leaf.SerialNumber)
	if _, err := client.RenewalInfo(ctx, &other); err == nil || errors.Is(err, acme.ErrMalformedRenewalInfo) || acme.ProblemType(err) == "" {
		t.Errorf("RenewalInfo of an unknown certificate: %v (problem %q), want an ACME problem", err, acme.ProblemType(err))
	}
}

// TestReplaces renews a certificate with an order that names it in replaces; a second order
// replacing the same certificate is refused as alreadyReplaced, which IsAlreadyReplaced
// recognises, and the fallback order without replaces succeeds.
func TestReplaces(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	client := registeredClient(t, ctx, pebble)
	names := []string{"replaced.example.test"}
	solve := dns01Solver(client, pebble)

	original, _ := issue(t, ctx, client, names, "", solve)
	leaf, err := x509.ParseCertificate(original[0])
	if err != nil {
		t.Fatal(err)
	}
	certID, err := acme.CertID(leaf)
	if err != nil {
		t.Fatal(err)
	}

	ordersBefore := pebble.OrderCount()
	renewed, _ := issueOrder(t, ctx, client, acme.OrderRequest{Identifiers: names, Replaces: certID}, solve)
	verifyIssued(t, pebble, renewed, names)
	if got := pebble.OrderCount() - ordersBefore; got != 1 {
		t.Errorf("the renewal created %d orders, want 1", got)
	}

	// Pebble marks the original replaced once the replacement is finalized.
	_, err = client.CreateOrder(ctx, acme.OrderRequest{Identifiers: names, Replaces: certID})
	if !acme.IsAlreadyReplaced(err) {
		t.Fatalf("second order replacing %s: %v (problem %q), want alreadyReplaced", certID, err, acme.ProblemType(err))
	}
	if _, slowDown := acme.RetryAfterOf(err); slowDown {
		t.Errorf("RetryAfterOf(alreadyReplaced) says slow down, want a fallback")
	}
	// The caller's fallback: the same order without replaces.
	fallback, err := client.CreateOrder(ctx, acme.OrderRequest{Identifiers: names})
	if err != nil {
		t.Fatalf("fallback order without replaces: %v", err)
	}
	if fallback.Status != acme.StatusPending || fallback.URL == "" {
		t.Errorf("fallback order = %+v, want a pending order with a URL", fallback)
	}
}

// TestAccountKeyTypes registers an account and issues a certificate with every account key type
// CheckAccountKey accepts: finalize is signed by the package itself, so this proves its signer
// agrees with x/crypto's (which signs registration and newOrder) and with Pebble. Ed25519 is
// refused before any request.
func TestAccountKeyTypes(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*flowTimeout)
	t.Cleanup(cancel)

	generate := map[string]func() (crypto.Signer, error){
		"RSA 2048":    func() (crypto.Signer, error) { return pki.GenerateKey(pki.RSA, 2048) },
		"ECDSA P-256": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
		"ECDSA P-384": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) },
		"ECDSA P-521": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P521(), rand.Reader) },
	}
	i := 0
	for name, newKey := range generate {
		i++
		domain := fmt.Sprintf("key%d.example.test", i)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			key, err := newKey()
			if err != nil {
				t.Fatal(err)
			}
			if err := acme.CheckAccountKey(key); err != nil {
				t.Fatalf("CheckAccountKey: %v", err)
			}
			client, err := acme.New(ctx, acme.Options{DirectoryURL: pebble.DirectoryURL(), AccountKey: key, CABundle: pebble.CABundle})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Register(ctx, "", nil); err != nil {
				t.Fatalf("Register: %v", err)
			}
			names := []string{domain}
			chain, _ := issue(t, ctx, client, names, "", dns01Solver(client, pebble))
			verifyIssued(t, pebble, chain, names)
		})
	}

	t.Run("Ed25519 refused", func(t *testing.T) {
		t.Parallel()
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		_, err = acme.New(ctx, acme.Options{DirectoryURL: pebble.DirectoryURL(), AccountKey: key, CABundle: pebble.CABundle})
		if err == nil || !acme.IsPermanent(err) {
			t.Fatalf("New with an Ed25519 account key: %v, want a permanent error", err)
		}
	})
}
