package edge_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

func TestChallengeStoreReplace(t *testing.T) {
	account := edgetest.NewAccount(t)
	good := account.ChallengeCertificatePEM(t, "token-a", "a.example.com")
	otherName := account.ChallengeCertificatePEM(t, "token-b", "b.example.com")
	ordinary := edgetest.CertificatePEM(t, edgetest.SelfSignedCertificate(t, "c.example.com"))

	tests := map[string]struct {
		data map[string][]byte
		// wantCertificates are the DNS names that must have a challenge certificate.
		wantCertificates []string
		// wantKeyAuthorizations maps tokens to the key authorization that must be served.
		wantKeyAuthorizations map[string]string
		// wantErrors are substrings of the reported error, one per bad entry.
		wantErrors []string
	}{
		"good entries": {
			data: map[string][]byte{
				v1alpha1.TLSALPN01Key("a.example.com"): good,
				v1alpha1.HTTP01Key("token-x"):          []byte("token-x.thumbprint\n"),
			},
			wantCertificates:      []string{"a.example.com", "A.Example.COM"},
			wantKeyAuthorizations: map[string]string{"token-x": "token-x.thumbprint"},
		},
		"upper-case key name is looked up in lower case": {
			data:             map[string][]byte{"tls-alpn-01.A.EXAMPLE.com.pem": good},
			wantCertificates: []string{"a.example.com"},
		},
		"bad entries are skipped, good ones kept": {
			data: map[string][]byte{
				v1alpha1.TLSALPN01Key("a.example.com"):   good,
				v1alpha1.TLSALPN01Key("bad.example.com"): []byte("not PEM"),
				v1alpha1.TLSALPN01Key("x.example.com"):   otherName,
				v1alpha1.TLSALPN01Key("c.example.com"):   ordinary,
				v1alpha1.HTTP01Key("secret-token"):       []byte("  "),
				"README":                                 []byte("hello"),
			},
			wantCertificates: []string{"a.example.com"},
			wantErrors: []string{
				`"bad.example.com": parsing certificate and key PEM`,
				`"x.example.com": certificate must name exactly "x.example.com"`,
				`"c.example.com": certificate has no acmeIdentifier extension`,
				"http-01 entry: empty key authorization",
				`key "README": not a challenge key`,
			},
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			store := edge.NewChallengeStore()
			if store.Synced() {
				t.Fatal("new store reports synced")
			}
			changed, err := store.Replace(test.data)
			if !changed {
				t.Error("first Replace reported no change")
			}
			if !store.Synced() {
				t.Error("store not synced after Replace")
			}
			for _, want := range test.wantErrors {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v does not report %q", err, want)
				}
			}
			if len(test.wantErrors) == 0 && err != nil {
				t.Errorf("unexpected error: %v", err)
			}
			if err != nil && strings.Contains(err.Error(), "secret-token") {
				t.Errorf("error %q names an http-01 token", err)
			}
			var entryError *edge.EntryError
			if len(test.wantErrors) > 0 && !errors.As(err, &entryError) {
				t.Errorf("error %v holds no *EntryError", err)
			}
			for _, dnsName := range test.wantCertificates {
				if _, ok := store.ChallengeCertificate(dnsName); !ok {
					t.Errorf("no challenge certificate for %q", dnsName)
				}
			}
			if tlsALPN01, _ := store.Len(); tlsALPN01 != len(uniqueLower(test.wantCertificates)) {
				t.Errorf("store holds %d certificates, want %d", tlsALPN01, len(uniqueLower(test.wantCertificates)))
			}
			for token, want := range test.wantKeyAuthorizations {
				if got, ok := store.KeyAuthorization(token); !ok || got != want {
					t.Errorf("KeyAuthorization(%q) = %q, %v; want %q", token, got, ok, want)
				}
			}
		})
	}
}

func TestChallengeStoreReplaceIsTheWholeTruth(t *testing.T) {
	account := edgetest.NewAccount(t)
	store := edge.NewChallengeStore()
	first := map[string][]byte{
		v1alpha1.TLSALPN01Key("a.example.com"): account.ChallengeCertificatePEM(t, "t1", "a.example.com"),
		v1alpha1.HTTP01Key("t1"):               []byte("t1.x"),
	}
	if _, err := store.Replace(first); err != nil {
		t.Fatal(err)
	}
	if changed, err := store.Replace(map[string][]byte{
		v1alpha1.TLSALPN01Key("a.example.com"): first[v1alpha1.TLSALPN01Key("a.example.com")],
		v1alpha1.HTTP01Key("t1"):               []byte("t1.x"),
	}); changed || err != nil {
		t.Errorf("Replace with equal data = %v, %v; want no change", changed, err)
	}

	second := map[string][]byte{v1alpha1.HTTP01Key("t2"): []byte("t2.x")}
	if changed, err := store.Replace(second); !changed || err != nil {
		t.Fatalf("Replace = %v, %v", changed, err)
	}
	if _, ok := store.ChallengeCertificate("a.example.com"); ok {
		t.Error("certificate absent from the new data is still served")
	}
	if _, ok := store.KeyAuthorization("t1"); ok {
		t.Error("key authorization absent from the new data is still served")
	}
	if got, _ := store.KeyAuthorization("t2"); got != "t2.x" {
		t.Errorf("KeyAuthorization(t2) = %q", got)
	}

	store.Clear()
	if tlsALPN01, http01 := store.Len(); tlsALPN01+http01 != 0 || !store.Synced() {
		t.Errorf("after Clear: %d+%d entries, synced %v", tlsALPN01, http01, store.Synced())
	}
}

// TestChallengeStoreConcurrency runs readers against a writer; `go test -race` checks it.
func TestChallengeStoreConcurrency(t *testing.T) {
	account := edgetest.NewAccount(t)
	data := []map[string][]byte{
		{v1alpha1.TLSALPN01Key("a.example.com"): account.ChallengeCertificatePEM(t, "t1", "a.example.com")},
		{v1alpha1.HTTP01Key("t2"): []byte("t2.x")},
	}
	store := edge.NewChallengeStore()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				store.ChallengeCertificate("a.example.com")
				store.KeyAuthorization("t2")
				store.Synced()
			}
		})
	}
	for i := range 200 {
		if _, err := store.Replace(data[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

func uniqueLower(names []string) map[string]bool {
	set := map[string]bool{}
	for _, name := range names {
		set[strings.ToLower(name)] = true
	}
	return set
}

// TestChallengeStorePartsOverlap: an update touches only its part's names; a name two parts
// hold is served from the one updated last, and from the other once it leaves that one.
func TestChallengeStorePartsOverlap(t *testing.T) {
	account := edgetest.NewAccount(t)
	first := account.ChallengeCertificatePEM(t, "token-1", "a.example.com")
	second := account.ChallengeCertificatePEM(t, "token-2", "a.example.com")
	other := account.ChallengeCertificatePEM(t, "token-3", "b.example.com")
	a, b := v1alpha1.TLSALPN01Key("a.example.com"), v1alpha1.TLSALPN01Key("b.example.com")
	// Another writer (or an older version) may spell a name in another case: it is the same name.
	upperA := "tls-alpn-01.A.Example.COM.pem"

	tests := map[string]struct {
		// firstKey and secondKey hold a.example.com's responses in shard-0 and shard-1.
		firstKey, secondKey string
	}{
		"same key":                             {firstKey: a, secondKey: a},
		"the part updated last in upper case":  {firstKey: a, secondKey: upperA},
		"the part updated first in upper case": {firstKey: upperA, secondKey: a},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			store := edge.NewChallengeStore()
			served := func(step, name string, want []byte) {
				t.Helper()
				certificate, ok := store.ChallengeCertificate(name)
				switch {
				case want == nil && ok:
					t.Fatalf("%s: %s is served, want nothing", step, name)
				case want == nil:
				case !ok:
					t.Fatalf("%s: %s is not served", step, name)
				case !strings.Contains(string(want), string(edgetest.ChainPEM(certificate))):
					t.Fatalf("%s: %s is served with another certificate", step, name)
				}
			}
			replace := func(part string, data map[string][]byte) {
				t.Helper()
				if _, err := store.ReplacePart(part, data); err != nil {
					t.Fatal(err)
				}
			}
			replace("shard-0", map[string][]byte{test.firstKey: first, b: other})
			replace("shard-1", map[string][]byte{test.secondKey: second})
			served("both parts", "a.example.com", second)
			served("both parts", "b.example.com", other)
			replace("shard-1", map[string][]byte{})
			served("gone from the part updated last", "a.example.com", first)
			replace("shard-0", map[string][]byte{b: other})
			served("gone from both", "a.example.com", nil)
			served("kept", "b.example.com", other)
			store.ClearPart("shard-0")
			served("part deleted", "b.example.com", nil)
			if tls, http := store.Len(); tls != 0 || http != 0 {
				t.Fatalf("store holds %d tls-alpn-01 and %d http-01 responses after everything left", tls, http)
			}
		})
	}
}
