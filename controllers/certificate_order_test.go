package controllers

import (
	"context"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/acme/acmetest"
)

// TestAuthorizationFetch: a new order's authorizations fetched while its claim is written are
// the ones the challenges step reads, without asking the CA again; a fetch that failed hands
// its error on rather than asking again at once (a CA slowing down is not asked twice); no
// fetch means a request now.
func TestAuthorizationFetch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, err := acmetest.Start(acmetest.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	client, err := ca.NewClient(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	order, err := client.CreateOrder(ctx, acme.OrderRequest{Identifiers: []string{"a.example.com", "b.example.com"}})
	if err != nil {
		t.Fatal(err)
	}

	fetch := fetchAuthorizations(ctx, client, order.AuthzURLs)
	for _, url := range order.AuthzURLs {
		authz, err := fetch.authorization(ctx, client, url)
		if err != nil {
			t.Fatal(err)
		}
		if authz.URL != url || authz.Status != acme.StatusPending || len(authz.Challenges) == 0 {
			t.Errorf("authorization %+v, want the pending one at %s", authz, url)
		}
	}
	if got := ca.Stats().Requests["authz"]; got != len(order.AuthzURLs) {
		t.Errorf("%d authorization requests for %d authorizations read after a fetch, want one each", got, len(order.AuthzURLs))
	}

	ca.SetFaults([]acmetest.Fault{{From: now.Add(-time.Hour), To: now.Add(time.Hour), Kind: acmetest.FaultRateLimited, RetryAfter: time.Minute}})
	before := ca.Stats().Requests["authz"]
	failed := fetchAuthorizations(ctx, client, order.AuthzURLs)
	if _, err := failed.authorization(ctx, client, order.AuthzURLs[0]); err == nil {
		t.Fatal("the fetch's rateLimited answer was not handed on")
	}
	if got := ca.Stats().Requests["authz"] - before; got != 1 {
		t.Errorf("%d authorization requests for a failed fetch read once, want 1", got)
	}
	// The fetch stopped at the first failure: a later authorization is asked for now.
	ca.SetFaults(nil)
	if _, err := failed.authorization(ctx, client, order.AuthzURLs[1]); err != nil {
		t.Fatalf("an authorization the fetch did not reach: %v", err)
	}
	var none *authorizationFetch
	if _, err := none.authorization(ctx, client, order.AuthzURLs[0]); err != nil {
		t.Fatalf("no fetch: %v", err)
	}
	if got := ca.Stats().Requests["authz"] - before; got != 3 {
		t.Errorf("%d authorization requests in all, want 3 (the failed fetch, then one each without a fetch to use)", got)
	}
}
