package dns01_test

import (
	"strings"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/dns01"
)

const (
	issuer  = "pebble.letsencrypt.org"
	account = "https://127.0.0.1:14000/my-account/1"
)

// TestPersistRecordValue: the record text is the draft's syntax byte for byte, as Pebble's VA
// parses it: issuer-domain-name, then "; accounturi=", then policy and persistuntil in that
// order, separated by "; ".
func TestPersistRecordValue(t *testing.T) {
	until := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := map[string]struct {
		record dns01.PersistRecord
		want   string
	}{
		"account only": {record: dns01.PersistRecord{IssuerDomainName: issuer, AccountURI: account},
			want: "pebble.letsencrypt.org; accounturi=https://127.0.0.1:14000/my-account/1"},
		"wildcard": {record: dns01.PersistRecord{IssuerDomainName: issuer, AccountURI: account, Wildcard: true},
			want: "pebble.letsencrypt.org; accounturi=https://127.0.0.1:14000/my-account/1; policy=wildcard"},
		"persistuntil": {record: dns01.PersistRecord{IssuerDomainName: issuer, AccountURI: account, PersistUntil: until},
			want: "pebble.letsencrypt.org; accounturi=https://127.0.0.1:14000/my-account/1; persistuntil=1798859045"},
		"wildcard and persistuntil": {record: dns01.PersistRecord{IssuerDomainName: "letsencrypt.org", AccountURI: "https://acme-v02.api.letsencrypt.org/acme/acct/123", Wildcard: true, PersistUntil: until},
			want: "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/123; policy=wildcard; persistuntil=1798859045"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.record.Value(); got != tc.want {
				t.Fatalf("Value() =\n  %s\nwant\n  %s", got, tc.want)
			}
			parsed, err := dns01.ParsePersistRecord(tc.want)
			if err != nil {
				t.Fatalf("ParsePersistRecord: %v", err)
			}
			if parsed.IssuerDomainName != tc.record.IssuerDomainName || parsed.AccountURI != tc.record.AccountURI ||
				parsed.Wildcard != tc.record.Wildcard || !parsed.PersistUntil.Equal(tc.record.PersistUntil) {
				t.Errorf("parsed %+v, want %+v", parsed, tc.record)
			}
		})
	}
	if got, want := dns01.PersistRecordName("*.example.test"), "_validation-persist.example.test."; got != want {
		t.Errorf("PersistRecordName = %q, want %q", got, want)
	}
	if got, want := dns01.ZoneFileLine("_validation-persist.example.test.", "a; accounturi=b", 3600),
		`_validation-persist.example.test. 3600 IN TXT "a; accounturi=b"`; got != want {
		t.Errorf("ZoneFileLine = %s, want %s", got, want)
	}
	long := dns01.ZoneFileLine("x.", strings.Repeat("a", 300), 60)
	if !strings.HasSuffix(long, `"`+strings.Repeat("a", 255)+`" "`+strings.Repeat("a", 45)+`"`) {
		t.Errorf("a value over 255 bytes is not split in strings: %s", long)
	}
}

// TestParsePersistRecord follows Pebble v2.10.3's parseDNSPersistIssueValues (va/va.go) case by
// case: what it accepts, what it refuses and what it ignores.
func TestParsePersistRecord(t *testing.T) {
	tests := map[string]struct {
		value    string
		wantErr  string
		account  string
		wildcard bool
		until    int64
	}{
		"minimal":                     {value: "ca.test; accounturi=https://a/1", account: "https://a/1"},
		"no spaces":                   {value: "ca.test;accounturi=https://a/1;policy=wildcard", account: "https://a/1", wildcard: true},
		"tabs and spaces around":      {value: " ca.test \t;\taccounturi = https://a/1 ; policy=wildcard ", account: "https://a/1", wildcard: true},
		"tags case-insensitive":       {value: "ca.test; AccountURI=https://a/1; POLICY=WildCard", account: "https://a/1", wildcard: true},
		"other policy means none":     {value: "ca.test; accounturi=https://a/1; policy=other", account: "https://a/1"},
		"unknown tags ignored":        {value: "ca.test; accounturi=https://a/1; future=yes", account: "https://a/1"},
		"persistuntil":                {value: "ca.test; accounturi=https://a/1; persistuntil=1798859045", account: "https://a/1", until: 1798859045},
		"no accounturi":               {value: "ca.test; policy=wildcard", wantErr: "no accounturi"},
		"empty accounturi":            {value: "ca.test; accounturi=", wantErr: "empty accounturi"},
		"trailing semicolon":          {value: "ca.test; accounturi=https://a/1;", wantErr: "trailing semicolon"},
		"not tag=value":               {value: "ca.test; accounturi", wantErr: "not tag=value"},
		"empty tag":                   {value: "ca.test; =x; accounturi=https://a/1", wantErr: "empty tag"},
		"duplicate tag":               {value: "ca.test; accounturi=https://a/1; AccountUri=https://a/2", wantErr: "duplicate"},
		"space inside a value":        {value: "ca.test; accounturi=https://a/1 x", wantErr: "does not allow"},
		"persistuntil not a number":   {value: "ca.test; accounturi=https://a/1; persistuntil=tomorrow", wantErr: "not a Unix time"},
		"no issuer":                   {value: "; accounturi=https://a/1", wantErr: "no issuer-domain-name"},
		"non-ASCII value":             {value: "ca.test; accounturi=https://ä/1", wantErr: "does not allow"},
		"persistuntil before the tag": {value: "ca.test; persistuntil=1; accounturi=https://a/1", account: "https://a/1", until: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			record, err := dns01.ParsePersistRecord(tc.value)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePersistRecord(%q) = %v, want an error with %q", tc.value, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePersistRecord(%q): %v", tc.value, err)
			}
			if record.IssuerDomainName != "ca.test" || record.AccountURI != tc.account || record.Wildcard != tc.wildcard {
				t.Errorf("parsed %+v", record)
			}
			if tc.until != 0 && record.PersistUntil.Unix() != tc.until || tc.until == 0 && !record.PersistUntil.IsZero() {
				t.Errorf("persistUntil %v, want %d", record.PersistUntil, tc.until)
			}
		})
	}
}

// TestEvaluatePersist: the verdicts the CA would reach, each its own reason.
func TestEvaluatePersist(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	good := dns01.PersistRecord{IssuerDomainName: issuer, AccountURI: account, Wildcard: true}.Value()
	tests := map[string]struct {
		values   []string
		wildcard bool
		want     dns01.PersistVerdict
	}{
		"accepted":                    {values: []string{good}, wildcard: true, want: dns01.PersistAccepted},
		"none":                        {want: dns01.PersistMissing},
		"only other CAs":              {values: []string{"other.ca; accounturi=" + account}, want: dns01.PersistMissing},
		"other CA and ours":           {values: []string{"other.ca; accounturi=x", good}, wildcard: true, want: dns01.PersistAccepted},
		"wrong account":               {values: []string{issuer + "; accounturi=https://127.0.0.1:14000/my-account/2"}, want: dns01.PersistWrongAccount},
		"no policy for a wildcard":    {values: []string{issuer + "; accounturi=" + account}, wildcard: true, want: dns01.PersistNoWildcardPolicy},
		"no policy, not a wildcard":   {values: []string{issuer + "; accounturi=" + account}, want: dns01.PersistAccepted},
		"expired":                     {values: []string{issuer + "; accounturi=" + account + "; persistuntil=1799999999"}, want: dns01.PersistExpired},
		"not expired yet":             {values: []string{issuer + "; accounturi=" + account + "; persistuntil=1800000000"}, want: dns01.PersistAccepted},
		"malformed before refusals":   {values: []string{issuer + "; accounturi=x", issuer + "; policy=wildcard"}, want: dns01.PersistMalformed},
		"one good among bad":          {values: []string{issuer + "; accounturi=x", good}, wildcard: true, want: dns01.PersistAccepted},
		"issuer with surrounding WSP": {values: []string{" " + issuer + " ; accounturi=" + account}, want: dns01.PersistAccepted},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := dns01.EvaluatePersist(tc.values, []string{issuer}, account, tc.wildcard, now)
			if got.Verdict != tc.want {
				t.Fatalf("verdict %s (%s), want %s", got.Verdict, got.Detail, tc.want)
			}
		})
	}
}

// TestTSIGAlgorithm: the API's spelling and BIND's name one algorithm.
func TestTSIGAlgorithm(t *testing.T) {
	for _, name := range []string{"", "HMACSHA256", "hmac-sha256", "hmac-sha256.", "HMAC-SHA256"} {
		if got, ok := dns01.TSIGAlgorithm(name); !ok || got != "hmac-sha256." {
			t.Errorf("TSIGAlgorithm(%q) = %q, %v; want hmac-sha256.", name, got, ok)
		}
	}
	for name, want := range map[string]string{"hmac-sha1": "hmac-sha1.", "HMACSHA512": "hmac-sha512.", "hmac-sha384": "hmac-sha384.", "hmac-sha224": "hmac-sha224."} {
		if got, ok := dns01.TSIGAlgorithm(name); !ok || got != want {
			t.Errorf("TSIGAlgorithm(%q) = %q, %v; want %s", name, got, ok, want)
		}
	}
	if _, ok := dns01.TSIGAlgorithm("hmac-md5"); ok {
		t.Error("hmac-md5 accepted")
	}
}
