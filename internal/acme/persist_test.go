package acme_test

import (
	"context"
	"slices"
	"testing"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/dns01"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestDNSPersist01AtPebble: Pebble's dns-persist-01 challenges carry issuer-domain-names (read
// from the raw authorization, x/crypto drops them) equal to its directory's caaIdentities, have
// no token, and the record text dns01.PersistRecord writes is the one Pebble's VA accepts, for a
// wildcard and its base name with one record.
func TestDNSPersist01AtPebble(t *testing.T) {
	testenv.SkipIfShort(t)
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	client := registeredClient(t, ctx, pebble)
	if got := client.CAAIdentities(); !slices.Equal(got, []string{"pebble.letsencrypt.org"}) {
		t.Fatalf("CAAIdentities = %v, want Pebble's default", got)
	}
	names := []string{"*.persist.test", "persist.test"}
	published := 0
	chain, _ := issue(t, ctx, client, names, "", solver{
		challengeType: acme.ChallengeDNSPersist01,
		publish: func(authz *acme.Authorization, challenge acme.Challenge) error {
			if challenge.Token != "" {
				t.Errorf("dns-persist-01 challenge has token %q, want none", challenge.Token)
			}
			issuers, err := client.DNSPersistIssuerDomainNames(ctx, authz.URL)
			if err != nil {
				return err
			}
			if !slices.Equal(issuers, client.CAAIdentities()) {
				t.Errorf("issuer-domain-names %v, want %v", issuers, client.CAAIdentities())
			}
			published++
			record := dns01.PersistRecord{IssuerDomainName: issuers[0], AccountURI: client.AccountURI(), Wildcard: true}
			return pebble.SetTXT(dns01.PersistRecordName(authz.Identifier), record.Value())
		},
	})
	verifyIssued(t, pebble, chain, names)
	if published != 2 {
		t.Errorf("published for %d authorizations, want 2", published)
	}
}
