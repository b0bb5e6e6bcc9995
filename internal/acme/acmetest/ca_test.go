package acmetest_test

import (
	"context"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/acme/acmetest"
	"github.com/certpilot/certpilot/internal/dns01"
	"github.com/certpilot/certpilot/internal/pki"
)

// fakeNow is a settable clock.
type fakeNow struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeNow) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeNow) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// issue runs one order through internal/acme's client, checking the dns-01 record on the CA's
// DNS server as a solver would, and returns the leaf.
func issue(t *testing.T, ctx context.Context, client *acme.Client, ca *acmetest.CA, name, profile, replaces string) (*x509.Certificate, error) {
	t.Helper()
	order, err := client.CreateOrder(ctx, acme.OrderRequest{Identifiers: []string{name}, Profile: profile, Replaces: replaces})
	if err != nil {
		return nil, err
	}
	for _, url := range order.AuthzURLs {
		authz, err := client.GetAuthorization(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		challenge, ok := authz.Challenge(acme.ChallengeDNS01)
		if !ok {
			t.Fatalf("no dns-01 challenge in %+v", authz)
		}
		fqdn, value, err := client.DNS01Record(name, challenge.Token)
		if err != nil {
			t.Fatal(err)
		}
		if visible, err := dns01.Visible(ctx, []string{ca.DNSAddr()}, fqdn, value); err != nil || !visible {
			t.Fatalf("TXT %s %q visible=%v at the CA's DNS: %v", fqdn, value, visible, err)
		}
		if err := client.Accept(ctx, challenge.URL); err != nil {
			t.Fatal(err)
		}
	}
	if order, err = client.GetOrder(ctx, order.URL); err != nil {
		t.Fatal(err)
	}
	if order.Status != acme.StatusReady {
		t.Fatalf("order is %s after accepting its challenges", order.Status)
	}
	key, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	if order, err = client.Finalize(ctx, order, csr); err != nil {
		t.Fatal(err)
	}
	chain, err := client.FetchCertificate(ctx, order.CertURL)
	if err != nil {
		t.Fatal(err)
	}
	return x509.ParseCertificate(chain[0])
}

func TestIssueRenewAndFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := &fakeNow{now: start}
	ca, err := acmetest.Start(acmetest.Options{Now: clock.Now, Profiles: map[string]time.Duration{
		"classic": 90 * 24 * time.Hour, "shortlived": 6 * 24 * time.Hour,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	client, err := ca.NewClient(ctx, "ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !client.SupportsRenewalInfo() {
		t.Fatal("the CA's directory has no renewalInfo")
	}

	leaf, err := issue(t, ctx, client, ca, "a.example.com", "shortlived", "")
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.NotBefore.Equal(start) || leaf.NotAfter.Sub(leaf.NotBefore) != 6*24*time.Hour-time.Second {
		t.Errorf("validity %s to %s, want 6 days from the CA's clock %s", leaf.NotBefore, leaf.NotAfter, start)
	}
	info, err := client.RenewalInfo(ctx, leaf)
	if err != nil {
		t.Fatal(err)
	}
	wantStart, wantEnd := acmetest.DefaultRenewalWindow(leaf.NotBefore, leaf.NotAfter)
	if !info.WindowStart.Equal(wantStart) || !info.WindowEnd.Equal(wantEnd) || info.RetryAfter != 6*time.Hour {
		t.Errorf("renewal info %+v, want [%s, %s) with Retry-After 6h", info, wantStart, wantEnd)
	}

	clock.Set(start.Add(4 * 24 * time.Hour))
	id, err := acme.CertID(leaf)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := issue(t, ctx, client, ca, "a.example.com", "shortlived", id)
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.NotBefore.Equal(clock.Now()) {
		t.Errorf("renewed certificate valid from %s, want %s", renewed.NotBefore, clock.Now())
	}
	if _, err := issue(t, ctx, client, ca, "a.example.com", "shortlived", id); !acme.IsAlreadyReplaced(err) {
		t.Errorf("a second order replacing %s: %v, want alreadyReplaced", id, err)
	}

	faultStart := clock.Now().Add(time.Hour)
	ca.SetFaults([]acmetest.Fault{
		{From: faultStart, To: faultStart.Add(time.Hour), Kind: acmetest.FaultRateLimited, RetryAfter: 30 * time.Minute},
		{From: faultStart.Add(time.Hour), To: faultStart.Add(2 * time.Hour), Kind: acmetest.FaultServerError},
		{From: faultStart.Add(2 * time.Hour), To: faultStart.Add(3 * time.Hour), Kind: acmetest.FaultTimeout},
	})
	clock.Set(faultStart)
	_, err = client.NewOrder(ctx, []string{"b.example.com"}, "classic")
	if wait, slowDown := acme.RetryAfterOf(err); !slowDown || wait != 30*time.Minute {
		t.Errorf("order during a 429 fault: %v (Retry-After %s), want a slow-down of 30m", err, wait)
	}
	for _, at := range []time.Duration{time.Hour, 2 * time.Hour} {
		clock.Set(faultStart.Add(at))
		if _, err := client.NewOrder(ctx, []string{"b.example.com"}, "classic"); err == nil {
			t.Errorf("order %s into the faults succeeded", at)
		} else if _, slowDown := acme.RetryAfterOf(err); slowDown {
			t.Errorf("order %s into the faults: %v is a slow-down", at, err)
		}
	}
	clock.Set(faultStart.Add(3 * time.Hour))
	if _, err := issue(t, ctx, client, ca, "b.example.com", "classic", ""); err != nil {
		t.Errorf("order after the faults: %v", err)
	}

	stats := ca.Stats()
	if stats.Orders["a.example.com"] != 2 || stats.Certificates["a.example.com"] != 2 || stats.Replacing != 1 || stats.AlreadyReplaced != 1 {
		t.Errorf("stats %+v, want 2 orders and 2 certificates for a.example.com, 1 replacing, 1 already replaced", stats)
	}
	t.Logf("%d requests over %d connections", stats.TotalRequests(), stats.Connections)
	if stats.Faults[acmetest.FaultRateLimited] != 1 || stats.Faults[acmetest.FaultServerError] != 1 || stats.Faults[acmetest.FaultTimeout] == 0 {
		t.Errorf("faults %v, want one of each", stats.Faults)
	}
	if issued := ca.Issued(); len(issued) != 3 || issued[1].Replaces != id {
		t.Errorf("issued %+v, want 3 with the second replacing %s", issued, id)
	}
}
