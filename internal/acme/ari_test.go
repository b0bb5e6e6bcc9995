package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

// TestCertID checks the examples of RFC 9773 section 4.1 and the serial encodings around them.
func TestCertID(t *testing.T) {
	aki := []byte{0x69, 0x88, 0x5b, 0x6b, 0x87, 0x46, 0x40, 0x41, 0xe1, 0xb3, 0x7b, 0x84, 0x7b, 0xa0, 0xae, 0x2c, 0xde, 0x01, 0xc8, 0xd4}
	serial := func(hex string) *big.Int {
		n, ok := new(big.Int).SetString(hex, 16)
		if !ok {
			t.Fatalf("bad hex %q", hex)
		}
		return n
	}
	tests := map[string]struct {
		cert    *x509.Certificate
		want    string
		wantErr bool
	}{
		"RFC 9773 example": {
			cert: &x509.Certificate{AuthorityKeyId: aki, SerialNumber: serial("0087654321")},
			want: "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
		},
		"serial with the high bit clear has no leading zero": {
			cert: &x509.Certificate{AuthorityKeyId: []byte{1}, SerialNumber: serial("7f01")},
			want: "AQ." + base64.RawURLEncoding.EncodeToString([]byte{0x7f, 0x01}),
		},
		"serial with the high bit set gets a leading zero": {
			cert: &x509.Certificate{AuthorityKeyId: []byte{1}, SerialNumber: serial("ff01")},
			want: "AQ." + base64.RawURLEncoding.EncodeToString([]byte{0x00, 0xff, 0x01}),
		},
		"no authority key identifier": {cert: &x509.Certificate{SerialNumber: big.NewInt(1)}, wantErr: true},
		"no certificate":              {cert: nil, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := CertID(tc.cert)
			if tc.wantErr {
				if err == nil || !IsPermanent(err) {
					t.Fatalf("CertID = %q, %v; want a permanent error", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("CertID = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestCertIDOfIssuedCertificate checks a certificate made by x509, whose AuthorityKeyId is the
// issuer's SubjectKeyId.
func TestCertIDOfIssuedCertificate(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	template := &x509.Certificate{
		SerialNumber: big.NewInt(0x8001), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		AuthorityKeyId: []byte{0xde, 0xad, 0xbe, 0xef},
	}
	parent := &x509.Certificate{SerialNumber: big.NewInt(1), SubjectKeyId: []byte{0xde, 0xad, 0xbe, 0xef}}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	got, err := CertID(cert)
	if want := "3q2-7w.AIAB"; err != nil || got != want {
		t.Errorf("CertID = %q, %v; want %q", got, err, want)
	}
}

func TestDecodeRenewalInfo(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		body      string
		wantStart time.Time
		wantEnd   time.Time
		wantURL   string
		wantErr   string // substring; empty means success
	}{
		"window": {
			body:      `{"suggestedWindow":{"start":"2026-12-01T00:00:00Z","end":"2026-12-03T00:00:00Z"}}`,
			wantStart: start, wantEnd: start.Add(48 * time.Hour),
		},
		"window with explanation and offsets": {
			body:      `{"suggestedWindow":{"start":"2026-12-01T01:00:00+01:00","end":"2026-12-01T00:00:01Z"},"explanationURL":"https://ca.test/why"}`,
			wantStart: start, wantEnd: start.Add(time.Second), wantURL: "https://ca.test/why",
		},
		"window in the past is valid": {
			body:      `{"suggestedWindow":{"start":"2020-01-01T00:00:00Z","end":"2020-01-02T00:00:00Z"}}`,
			wantStart: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), wantEnd: time.Date(2020, 1, 2, 0, 0, 0, 0, time.UTC),
		},
		"end before start":     {body: `{"suggestedWindow":{"start":"2026-12-03T00:00:00Z","end":"2026-12-01T00:00:00Z"}}`, wantErr: "at or before it starts"},
		"end equal to start":   {body: `{"suggestedWindow":{"start":"2026-12-01T00:00:00Z","end":"2026-12-01T00:00:00Z"}}`, wantErr: "at or before it starts"},
		"unparsable start":     {body: `{"suggestedWindow":{"start":"tomorrow","end":"2026-12-01T00:00:00Z"}}`, wantErr: `start "tomorrow"`},
		"missing end":          {body: `{"suggestedWindow":{"start":"2026-12-01T00:00:00Z"}}`, wantErr: "no end"},
		"no suggested window":  {body: `{"explanationURL":"https://ca.test/why"}`, wantErr: "no suggestedWindow"},
		"not JSON":             {body: `<html>oops</html>`, wantErr: "not a JSON object"},
		"window of wrong type": {body: `{"suggestedWindow":"soon"}`, wantErr: "not a JSON object"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			info, err := decodeRenewalInfo(strings.NewReader(tc.body))
			if tc.wantErr != "" {
				if !errors.Is(err, ErrMalformedRenewalInfo) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("decodeRenewalInfo error = %v, want ErrMalformedRenewalInfo containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !info.WindowStart.Equal(tc.wantStart) || !info.WindowEnd.Equal(tc.wantEnd) || info.ExplanationURL != tc.wantURL {
				t.Errorf("decodeRenewalInfo = %+v, want window [%v, %v), explanation %q", info, tc.wantStart, tc.wantEnd, tc.wantURL)
			}
		})
	}
}

func TestRetryAfterOf(t *testing.T) {
	withRetryAfter := func(status int, problemType, retryAfter string) *acme.Error {
		header := http.Header{}
		if retryAfter != "" {
			header.Set("Retry-After", retryAfter)
		}
		return &acme.Error{StatusCode: status, ProblemType: problemType, Header: header}
	}
	tests := map[string]struct {
		err          error
		wantWait     time.Duration
		wantSlowDown bool
	}{
		"nil":                             {err: nil},
		"plain error":                     {err: errors.New("connection refused")},
		"rateLimited with Retry-After":    {err: withRetryAfter(429, problemPrefix+"rateLimited", "3600"), wantWait: time.Hour, wantSlowDown: true},
		"wrapped rateLimited":             {err: errors.Join(errors.New("ordering"), withRetryAfter(429, problemPrefix+"rateLimited", "60")), wantWait: time.Minute, wantSlowDown: true},
		"rateLimited without Retry-After": {err: withRetryAfter(429, problemPrefix+"rateLimited", ""), wantSlowDown: true},
		"429 without a problem":           {err: withRetryAfter(429, "", "120"), wantWait: 2 * time.Minute, wantSlowDown: true},
		"503 from a proxy":                {err: withRetryAfter(503, "", "30"), wantWait: 30 * time.Second, wantSlowDown: true},
		"serverInternal":                  {err: withRetryAfter(500, problemPrefix+"serverInternal", ""), wantSlowDown: true},
		"Retry-After of a week is capped at a day": {
			err: withRetryAfter(429, problemPrefix+"rateLimited", "604800"), wantWait: MaxServerRetryAfter, wantSlowDown: true,
		},
		"HTTP-date Retry-After": {
			err:      withRetryAfter(503, "", time.Now().Add(2*time.Hour).UTC().Format(http.TimeFormat)),
			wantWait: 2 * time.Hour, wantSlowDown: true,
		},
		"unparsable Retry-After": {err: withRetryAfter(429, problemPrefix+"rateLimited", "soon"), wantSlowDown: true},
		"compound with rateLimited": {err: &acme.Error{StatusCode: 400, ProblemType: problemPrefix + "compound", Subproblems: []acme.Subproblem{
			{Type: problemPrefix + "rejectedIdentifier"}, {Type: problemPrefix + "rateLimited"},
		}}, wantSlowDown: true},
		"badNonce is not slowing down":  {err: withRetryAfter(400, problemPrefix+"badNonce", "")},
		"malformed with a Retry-After":  {err: withRetryAfter(400, problemPrefix+"malformed", "60")},
		"502 is not a request to wait":  {err: withRetryAfter(502, "", "")},
		"alreadyReplaced is not a wait": {err: withRetryAfter(409, problemPrefix+"alreadyReplaced", "")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			wait, slowDown := RetryAfterOf(tc.err)
			// HTTP-dates have whole seconds: allow one second of rounding.
			if slowDown != tc.wantSlowDown || wait > tc.wantWait || wait < tc.wantWait-time.Second {
				t.Errorf("RetryAfterOf(%v) = (%v, %v), want (%v, %v)", tc.err, wait, slowDown, tc.wantWait, tc.wantSlowDown)
			}
		})
	}

	// A rate limit (the account's) is the part of slowing down that pauses the account's orders.
	rateLimited := map[string]bool{
		"rateLimited with Retry-After": true, "wrapped rateLimited": true, "rateLimited without Retry-After": true,
		"429 without a problem": true, "Retry-After of a week is capped at a day": true, "unparsable Retry-After": true,
		"compound with rateLimited": true,
	}
	for name, tc := range tests {
		t.Run("IsRateLimited/"+name, func(t *testing.T) {
			if got := IsRateLimited(tc.err); got != rateLimited[name] {
				t.Errorf("IsRateLimited(%v) = %v, want %v", tc.err, got, rateLimited[name])
			}
		})
	}
}

func TestIsAlreadyReplaced(t *testing.T) {
	tests := map[string]struct {
		err  error
		want bool
	}{
		"alreadyReplaced":         {err: &acme.Error{StatusCode: 409, ProblemType: problemPrefix + "alreadyReplaced"}, want: true},
		"wrapped alreadyReplaced": {err: errors.Join(errors.New("x"), &acme.Error{StatusCode: 409, ProblemType: problemPrefix + "alreadyReplaced"}), want: true},
		"other conflict":          {err: &acme.Error{StatusCode: 409, ProblemType: problemPrefix + "malformed"}},
		"409 without a problem":   {err: &acme.Error{StatusCode: 409}},
		"plain error":             {err: errors.New("alreadyReplaced")},
		"nil":                     {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := IsAlreadyReplaced(tc.err); got != tc.want {
				t.Errorf("IsAlreadyReplaced(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestPollInterval(t *testing.T) {
	tests := map[string]struct {
		serverRetryAfter, pending, want time.Duration
	}{
		"just created":                         {pending: 0, want: FirstPollInterval},
		"1.9 s pending":                        {pending: 1900 * time.Millisecond, want: FirstPollInterval},
		"2 s pending":                          {pending: 2 * time.Second, want: time.Second},
		"9 s pending":                          {pending: 9 * time.Second, want: time.Second},
		"10 s pending":                         {pending: 10 * time.Second, want: time.Second},
		"25 s pending":                         {pending: 25 * time.Second, want: 2 * time.Second},
		"100 s pending":                        {pending: 100 * time.Second, want: 10 * time.Second},
		"10 minutes pending reaches the cap":   {pending: 10 * time.Minute, want: MaxPollInterval},
		"a day pending stays at the cap":       {pending: 24 * time.Hour, want: MaxPollInterval},
		"negative pending (clock skew)":        {pending: -time.Hour, want: FirstPollInterval},
		"server's Retry-After wins":            {serverRetryAfter: 3 * time.Second, pending: time.Hour, want: 3 * time.Second},
		"server's long Retry-After is honored": {serverRetryAfter: 5 * time.Minute, pending: 0, want: 5 * time.Minute},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := PollInterval(tc.serverRetryAfter, tc.pending); got != tc.want {
				t.Errorf("PollInterval(%v, %v) = %v, want %v", tc.serverRetryAfter, tc.pending, got, tc.want)
			}
		})
	}
	// The interval never shrinks as an object keeps waiting.
	previous := time.Duration(0)
	for pending := time.Duration(0); pending < time.Hour; pending += 500 * time.Millisecond {
		got := PollInterval(0, pending)
		if got < previous {
			t.Fatalf("PollInterval(0, %v) = %v, less than %v before", pending, got, previous)
		}
		previous = got
	}
}

func TestInlineWait(t *testing.T) {
	tests := map[string]struct {
		look             int
		serverRetryAfter time.Duration
		want             time.Duration
		ok               bool
	}{
		"first look":                                 {look: 0, want: 25 * time.Millisecond, ok: true},
		"first look despite the server's wait":       {look: 0, serverRetryAfter: time.Second, want: 25 * time.Millisecond, ok: true},
		"second look":                                {look: 1, want: 50 * time.Millisecond, ok: true},
		"second look after the server's Retry-After": {look: 1, serverRetryAfter: time.Second, ok: false},
		"last look":                                  {look: 3, want: 200 * time.Millisecond, ok: true},
		"no more looks":                              {look: 4, ok: false},
		"negative look":                              {look: -1, ok: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := InlineWait(tc.look, tc.serverRetryAfter)
			if got != tc.want || ok != tc.ok {
				t.Errorf("InlineWait(%d, %v) = %v, %v; want %v, %v", tc.look, tc.serverRetryAfter, got, ok, tc.want, tc.ok)
			}
		})
	}
	var total time.Duration
	for i := 0; ; i++ {
		wait, ok := InlineWait(i, 0)
		if !ok {
			break
		}
		total += wait
	}
	if total > 400*time.Millisecond {
		t.Errorf("the in-line looks hold a worker %v, more than 400 ms", total)
	}
}
