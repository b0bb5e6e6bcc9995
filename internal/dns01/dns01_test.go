package dns01_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/dns01"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestRFC2136 adds and removes TXT records on a real BIND with TSIG, and checks each failure
// says what is wrong.
func TestRFC2136(t *testing.T) {
	bind := testenv.StartBIND(t, "certpilot.test")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	updater := &dns01.RFC2136{Nameserver: bind.Address, TSIGKeyName: bind.TSIGKeyName, TSIGAlgorithm: bind.TSIGAlgorithm, TSIGSecret: bind.TSIGSecret}
	name := "_acme-challenge.certpilot.test."

	// A wildcard and its apex share the name: both values at once.
	for _, value := range []string{"wildcard-value", "apex-value"} {
		if err := updater.Present(ctx, name, value); err != nil {
			t.Fatal(err)
		}
	}
	values, err := bind.TXT(name)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(values)
	if !slices.Equal(values, []string{"apex-value", "wildcard-value"}) {
		t.Fatalf("TXT %s = %v, want both values", name, values)
	}
	if visible, err := dns01.Visible(ctx, []string{bind.Address}, name, "apex-value"); err != nil || !visible {
		t.Errorf("Visible = %v, %v; want true", visible, err)
	}
	if err := updater.CleanUp(ctx, name, "apex-value"); err != nil {
		t.Fatal(err)
	}
	if values, _ := bind.TXT(name); !slices.Equal(values, []string{"wildcard-value"}) {
		t.Errorf("after removing one value: %v", values)
	}
	if visible, err := dns01.Visible(ctx, []string{bind.Address}, name, "apex-value"); err != nil || visible {
		t.Errorf("Visible after removal = %v, %v; want false", visible, err)
	}
	if err := updater.CleanUp(ctx, name, "wildcard-value"); err != nil {
		t.Fatal(err)
	}

	tests := map[string]struct {
		updater dns01.RFC2136
		name    string
		want    error
	}{
		"wrong secret":   {updater: dns01.RFC2136{Nameserver: bind.Address, TSIGKeyName: bind.TSIGKeyName, TSIGSecret: "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldA=="}, name: name, want: dns01.ErrTSIG},
		"wrong key name": {updater: dns01.RFC2136{Nameserver: bind.Address, TSIGKeyName: "other.", TSIGSecret: bind.TSIGSecret}, name: name, want: dns01.ErrTSIG},
		"zone refuses":   {updater: *updater, name: "_acme-challenge." + bind.RefusedZone, want: dns01.ErrRefused},
		"no such zone":   {updater: *updater, name: "_acme-challenge.elsewhere.example.", want: dns01.ErrRefused},
		"unreachable":    {updater: dns01.RFC2136{Nameserver: testenv.FreeAddress(t), TSIGKeyName: bind.TSIGKeyName, TSIGSecret: bind.TSIGSecret, Timeout: time.Second}, name: name, want: dns01.ErrUnreachable},
	}
	for desc, tc := range tests {
		t.Run(desc, func(t *testing.T) {
			err := tc.updater.Present(ctx, tc.name, "value")
			if !errors.Is(err, tc.want) {
				t.Fatalf("Present = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestAuthoritativeServersAndCNAME: the record must be at every authoritative nameserver (a
// secondary that lags is found by the NS lookup and waited for), a CNAME at _acme-challenge is
// followed into the zone that accepts updates, and BIND's own spelling of the TSIG algorithm
// signs the updates.
func TestAuthoritativeServersAndCNAME(t *testing.T) {
	bind := testenv.StartBINDWith(t, testenv.BINDOptions{
		Zone:               "auth.test",
		Secondary:          true,
		Resolver:           true,
		RefusedZoneRecords: []string{"_acme-challenge.www IN CNAME www.acme.auth.test."},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	updater := &dns01.RFC2136{Nameserver: bind.Address, TSIGKeyName: bind.TSIGKeyName, TSIGAlgorithm: "hmac-sha256", TSIGSecret: bind.TSIGSecret}

	servers, err := dns01.AuthoritativeNameservers(ctx, []string{bind.Address}, "_acme-challenge.auth.test.")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(servers, []string{bind.Address, bind.SecondaryAddress}) {
		t.Fatalf("authoritative nameservers %v, want the primary and the secondary", servers)
	}
	if err := updater.Present(ctx, "_acme-challenge.auth.test.", "lagging"); err != nil {
		t.Fatal(err)
	}
	missing, err := dns01.MissingAt(ctx, servers, "_acme-challenge.auth.test.", "lagging")
	if err != nil || !slices.Equal(missing, []string{bind.SecondaryAddress}) {
		t.Fatalf("missing at %v (%v), want the secondary only", missing, err)
	}
	if err := bind.NotifySecondary(); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Poll(ctx, 30*time.Second, func() error {
		missing, err := dns01.MissingAt(ctx, servers, "_acme-challenge.auth.test.", "lagging")
		if err != nil || len(missing) > 0 {
			return fmt.Errorf("missing at %v (%v)", missing, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	name := "_acme-challenge.www." + bind.RefusedZone
	target, err := dns01.FollowCNAME(ctx, []string{bind.Address}, name)
	if err != nil || target != "www.acme.auth.test." {
		t.Fatalf("FollowCNAME(%s) = %q, %v; want www.acme.auth.test.", name, target, err)
	}
	if err := updater.Present(ctx, target, "delegated"); err != nil {
		t.Fatal(err)
	}
	// A validator asking its resolver for the original name gets the value through the CNAME.
	if values, err := dns01.TXT(ctx, bind.ResolverAddress, name); err != nil || !slices.Contains(values, "delegated") {
		t.Errorf("TXT %s = %v, %v; want the delegated value through the CNAME", name, values, err)
	}
	if target, err := dns01.FollowCNAME(ctx, []string{bind.Address}, "_acme-challenge.auth.test."); err != nil || target != "_acme-challenge.auth.test." {
		t.Errorf("FollowCNAME without a CNAME = %q, %v", target, err)
	}
}
