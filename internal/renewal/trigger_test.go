package renewal

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/pki"
)

// keys caches generated keys: RSA generation takes up to a second, and the cases only need a
// few distinct keys.
var keys = struct {
	sync.Mutex
	byName map[string]crypto.Signer
}{byName: map[string]crypto.Signer{}}

// testKey returns a key of the given algorithm and size; distinct labels give distinct keys of
// the same type.
func testKey(t *testing.T, algorithm string, size int, label string) crypto.Signer {
	t.Helper()
	keys.Lock()
	defer keys.Unlock()
	name := fmt.Sprintf("%s-%d-%s", algorithm, size, label)
	if key, ok := keys.byName[name]; ok {
		return key
	}
	var (
		key crypto.Signer
		err error
	)
	switch {
	case algorithm == "ECDSA" && size == 256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case algorithm == "ECDSA" && size == 384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case algorithm == "Ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case algorithm == "RSA":
		key, err = rsa.GenerateKey(rand.Reader, size)
	default:
		t.Fatalf("no test key for %s %d", algorithm, size)
	}
	if err != nil {
		t.Fatalf("generating %s %d key: %v", algorithm, size, err)
	}
	keys.byName[name] = key
	return key
}

// cert describes a self-signed test certificate.
type cert struct {
	key                 crypto.Signer
	commonName          string
	dnsNames            []string
	notBefore, notAfter time.Time
}

// pem returns the certificate as PEM.
func (c cert) pem(t *testing.T) []byte {
	t.Helper()
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: c.commonName},
		NotBefore:    c.notBefore,
		NotAfter:     c.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	template.DNSNames, template.IPAddresses = pki.SplitNames(c.dnsNames) // IP addresses as iPAddress names
	der, err := x509.CreateCertificate(rand.Reader, template, template, c.key.Public(), c.key)
	if err != nil {
		t.Fatalf("creating certificate for %v: %v", c.dnsNames, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pkcs8PEM(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("encoding key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestShouldIssue(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	names := []string{"www.example.com", "example.com", "api.example.com"}
	ecKey := testKey(t, "ECDSA", 256, "leaf")
	otherECKey := testKey(t, "ECDSA", 256, "other")
	p384Key := testKey(t, "ECDSA", 384, "leaf")
	rsa2048Key := testKey(t, "RSA", 2048, "leaf")
	rsa3072Key := testKey(t, "RSA", 3072, "leaf")
	caKey := testKey(t, "ECDSA", 256, "ca")
	const (
		production = "https://acme-v02.api.letsencrypt.org/directory"
		staging    = "https://acme-staging-v02.api.letsencrypt.org/directory"
	)
	server := func(url string) func(*Input) { return func(in *Input) { in.IssuerServer = url } }
	secretServer := func(s *Secret, url string) *Secret { s.IssuerServer = url; return s }

	// A 90-day certificate issued 10 days ago, followed by its "chain" (an unrelated CA
	// certificate), as tls.crt holds them: due for renewal 7 days before expiry.
	healthy := cert{key: ecKey, commonName: names[0], dnsNames: names, notBefore: now.Add(-10 * day), notAfter: now.Add(80 * day)}
	chain := cert{key: caKey, commonName: "Test CA", notBefore: now.Add(-day), notAfter: now.Add(365 * day)}.pem(t)

	// secret returns the Secret certpilot would have written for c.
	secret := func(c cert) *Secret {
		return &Secret{
			CertificatePEM: append(c.pem(t), chain...),
			PrivateKeyPEM:  pkcs8PEM(t, c.key),
			IssuerKind:     "Issuer",
			IssuerName:     "letsencrypt",
			IssuerServer:   production,
		}
	}
	// input returns the spec matching healthy, changed by edits.
	input := func(s *Secret, edits ...func(*Input)) Input {
		in := Input{
			Now:          now,
			DNSNames:     names,
			KeyAlgorithm: "ECDSA",
			IssuerKind:   "Issuer",
			IssuerName:   "letsencrypt",
			IssuerServer: production,
			RenewBefore:  168 * time.Hour,
			Secret:       s,
		}
		for _, edit := range edits {
			edit(&in)
		}
		return in
	}
	with := func(c cert, edit func(*cert)) cert {
		edit(&c)
		return c
	}
	rsaSpec := func(size int) func(*Input) {
		return func(in *Input) { in.KeyAlgorithm, in.KeySize = "RSA", size }
	}
	at := func(t time.Time) func(*Input) { return func(in *Input) { in.Now = t } }

	tests := map[string]struct {
		in         Input
		wantReason string // empty: no issuance
		// wantMessage are substrings of the message, which must name what differs.
		wantMessage []string
	}{
		"healthy ECDSA Secret": {
			in: input(secret(healthy)),
		},
		"healthy RSA Secret with the default size": {
			in: input(secret(with(healthy, func(c *cert) { c.key = rsa2048Key })), rsaSpec(0)),
		},
		"healthy ECDSA P-384 Secret": {
			in: input(secret(with(healthy, func(c *cert) { c.key = p384Key })), func(in *Input) { in.KeySize = 384 }),
		},
		"empty algorithm and kind mean the API defaults": {
			in: input(secret(healthy), func(in *Input) { in.KeyAlgorithm, in.IssuerKind = "", "" }),
		},
		"names reordered, same set and same first name": {
			in: input(secret(with(healthy, func(c *cert) {
				c.dnsNames = []string{"api.example.com", "example.com", "www.example.com"}
			}))),
		},
		"names differ only in case and trailing dot": {
			in: input(secret(with(healthy, func(c *cert) {
				c.commonName = "WWW.Example.com"
				c.dnsNames = []string{"WWW.example.com.", "Example.COM", "api.example.com"}
			}))),
		},
		"certificate without a common name (Let's Encrypt tlsserver profile)": {
			in: input(secret(with(healthy, func(c *cert) { c.commonName = "" }))),
		},
		"legacy PKCS #1 RSA key": {
			in: input(func() *Secret {
				s := secret(with(healthy, func(c *cert) { c.key = rsa2048Key }))
				s.PrivateKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsa2048Key.(*rsa.PrivateKey))})
				return s
			}(), rsaSpec(2048)),
		},
		"Secret missing": {
			in:         input(nil),
			wantReason: ReasonSecretMissing,
		},
		"Secret empty": {
			in:          input(&Secret{IssuerKind: "Issuer", IssuerName: "letsencrypt"}),
			wantReason:  ReasonSecretEmpty,
			wantMessage: []string{"tls.crt", "tls.key"},
		},
		"tls.crt empty": {
			in:          input(func() *Secret { s := secret(healthy); s.CertificatePEM = nil; return s }()),
			wantReason:  ReasonInvalidCertificate,
			wantMessage: []string{"tls.crt is empty"},
		},
		"tls.crt not PEM": {
			in:          input(func() *Secret { s := secret(healthy); s.CertificatePEM = []byte("not a certificate"); return s }()),
			wantReason:  ReasonInvalidCertificate,
			wantMessage: []string{"cannot be parsed"},
		},
		"tls.crt holds a corrupt certificate": {
			in: input(func() *Secret {
				s := secret(healthy)
				s.CertificatePEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x01}})
				return s
			}()),
			wantReason:  ReasonInvalidCertificate,
			wantMessage: []string{"cannot be parsed"},
		},
		"tls.key empty": {
			in:          input(func() *Secret { s := secret(healthy); s.PrivateKeyPEM = nil; return s }()),
			wantReason:  ReasonInvalidPrivateKey,
			wantMessage: []string{"tls.key is empty"},
		},
		"tls.key holds a certificate": {
			in:          input(func() *Secret { s := secret(healthy); s.PrivateKeyPEM = chain; return s }()),
			wantReason:  ReasonInvalidPrivateKey,
			wantMessage: []string{"cannot be parsed"},
		},
		"tls.key belongs to another certificate": {
			in:          input(func() *Secret { s := secret(healthy); s.PrivateKeyPEM = pkcs8PEM(t, otherECKey); return s }()),
			wantReason:  ReasonKeyMismatch,
			wantMessage: []string{"does not belong"},
		},
		"tls.crt holds the chain before the leaf": {
			in: input(func() *Secret {
				s := secret(healthy)
				s.CertificatePEM = append(append([]byte{}, chain...), healthy.pem(t)...)
				return s
			}()),
			wantReason: ReasonKeyMismatch,
		},
		"name added to the spec": {
			in: input(secret(healthy), func(in *Input) {
				in.DNSNames = []string{"www.example.com", "example.com", "api.example.com", "new.example.com"}
			}),
			wantReason:  ReasonDNSNamesChanged,
			wantMessage: []string{"lacks new.example.com"},
		},
		"name removed from the spec": {
			in:          input(secret(healthy), func(in *Input) { in.DNSNames = []string{"www.example.com", "example.com"} }),
			wantReason:  ReasonDNSNamesChanged,
			wantMessage: []string{"has extra api.example.com"},
		},
		"first name changed, same set": {
			in: input(secret(healthy), func(in *Input) {
				in.DNSNames = []string{"example.com", "www.example.com", "api.example.com"}
			}),
			wantReason:  ReasonDNSNamesChanged,
			wantMessage: []string{"subject is www.example.com", "first DNS name is example.com"},
		},
		"IP address added to the spec": {
			in: input(secret(healthy), func(in *Input) {
				in.DNSNames = []string{"www.example.com", "example.com", "api.example.com", "192.0.2.1"}
			}),
			wantReason:  ReasonDNSNamesChanged,
			wantMessage: []string{"lacks 192.0.2.1"},
		},
		"IP addresses match, in another form": {
			in: input(secret(with(healthy, func(c *cert) { c.dnsNames = append(slices.Clone(names), "2001:db8::1", "192.0.2.1") })), func(in *Input) {
				in.DNSNames = append(slices.Clone(names), "192.0.2.1", "2001:db8:0::1")
			}),
		},
		"IP address changed": {
			in: input(secret(with(healthy, func(c *cert) { c.dnsNames = append(slices.Clone(names), "192.0.2.1") })), func(in *Input) {
				in.DNSNames = append(slices.Clone(names), "192.0.2.2")
			}),
			wantReason:  ReasonDNSNamesChanged,
			wantMessage: []string{"lacks 192.0.2.2", "has extra 192.0.2.1"},
		},
		"IP addresses only, no subject": {
			in: input(secret(with(healthy, func(c *cert) { c.commonName, c.dnsNames = "", []string{"127.0.0.1", "::1"} })), func(in *Input) {
				in.DNSNames = []string{"127.0.0.1", "::1"}
			}),
		},
		"IP addresses first, subject the first DNS name": {
			in: input(secret(with(healthy, func(c *cert) { c.dnsNames = append(slices.Clone(names), "127.0.0.1") })), func(in *Input) {
				in.DNSNames = append([]string{"127.0.0.1"}, names...)
			}),
		},
		"ECDSA certificate, spec asks for RSA": {
			in:          input(secret(healthy), rsaSpec(2048)),
			wantReason:  ReasonKeyAlgorithmChanged,
			wantMessage: []string{"is ECDSA", "asks for RSA"},
		},
		"RSA certificate, spec asks for ECDSA": {
			in:          input(secret(with(healthy, func(c *cert) { c.key = rsa2048Key }))),
			wantReason:  ReasonKeyAlgorithmChanged,
			wantMessage: []string{"is RSA", "asks for ECDSA"},
		},
		"Ed25519 certificate, spec asks for ECDSA": {
			in:          input(secret(with(healthy, func(c *cert) { c.key = testKey(t, "Ed25519", 0, "leaf") }))),
			wantReason:  ReasonKeyAlgorithmChanged,
			wantMessage: []string{"ed25519", "asks for ECDSA"},
		},
		"RSA 3072 certificate, spec asks for RSA 4096": {
			in:          input(secret(with(healthy, func(c *cert) { c.key = rsa3072Key })), rsaSpec(4096)),
			wantReason:  ReasonKeySizeChanged,
			wantMessage: []string{"RSA 3072", "RSA 4096"},
		},
		"RSA 3072 certificate, spec asks for the default RSA size": {
			in:          input(secret(with(healthy, func(c *cert) { c.key = rsa3072Key })), rsaSpec(0)),
			wantReason:  ReasonKeySizeChanged,
			wantMessage: []string{"RSA 3072", "RSA 2048"},
		},
		"P-256 certificate, spec asks for P-384": {
			in:          input(secret(healthy), func(in *Input) { in.KeySize = 384 }),
			wantReason:  ReasonKeySizeChanged,
			wantMessage: []string{"ECDSA 256", "ECDSA 384"},
		},
		"issuer name changed": {
			in:          input(secret(healthy), func(in *Input) { in.IssuerName = "letsencrypt-staging" }),
			wantReason:  ReasonIssuerChanged,
			wantMessage: []string{"Issuer letsencrypt,", "Issuer letsencrypt-staging"},
		},
		"issuer kind changed": {
			in:          input(secret(healthy), func(in *Input) { in.IssuerKind = "ClusterIssuer" }),
			wantReason:  ReasonIssuerChanged,
			wantMessage: []string{"by Issuer letsencrypt", "ClusterIssuer letsencrypt"},
		},
		"Secret records no issuer": {
			in:          input(func() *Secret { s := secret(healthy); s.IssuerKind, s.IssuerName = "", ""; return s }()),
			wantReason:  ReasonIssuerChanged,
			wantMessage: []string{"does not record"},
		},
		"issuer points to another ACME server": {
			in:          input(secret(healthy), server(staging)),
			wantReason:  ReasonIssuerServerChanged,
			wantMessage: []string{"issued by the ACME server " + production, "Issuer letsencrypt now points to " + staging},
		},
		"issuer server differs only in case and a trailing slash": {
			in: input(secret(healthy), server("HTTPS://ACME-v02.API.LetsEncrypt.org/directory/")),
		},
		"issuer server path differs": {
			in:         input(secret(healthy), server("https://acme-v02.api.letsencrypt.org/other")),
			wantReason: ReasonIssuerServerChanged,
		},
		"Secret records no server (written before certpilot recorded it)": {
			in: input(secretServer(secret(healthy), ""), server(staging)),
		},
		"issuer server unknown": {
			in: input(secret(healthy), server("")),
		},
		"issuer name change wins over server change": {
			in:         input(secret(healthy), server(staging), func(in *Input) { in.IssuerName = "letsencrypt-staging" }),
			wantReason: ReasonIssuerChanged,
		},
		"server change wins over expiry": {
			in:         input(secret(healthy), server(staging), at(healthy.notAfter.Add(time.Hour))),
			wantReason: ReasonIssuerServerChanged,
		},
		"expired at notAfter": {
			in:          input(secret(healthy), at(healthy.notAfter)),
			wantReason:  ReasonExpired,
			wantMessage: []string{healthy.notAfter.Format(time.RFC3339)},
		},
		"certificate not yet valid (notBefore in the future) is not reissued": {
			in: input(secret(with(healthy, func(c *cert) { c.notBefore, c.notAfter = now.Add(time.Hour), now.Add(90*day) }))),
		},
		"one second before the renewal time": {
			in: input(secret(healthy), at(healthy.notAfter.Add(-7*day-time.Second))),
		},
		"within renewBefore": {
			in:          input(secret(healthy), at(healthy.notAfter.Add(-6*day))),
			wantReason:  ReasonRenewalDue,
			wantMessage: []string{healthy.notAfter.Add(-7 * day).Format(time.RFC3339)},
		},
		"shortlived 160h certificate before half-life": {
			in: input(secret(with(healthy, func(c *cert) { c.notBefore, c.notAfter = now, now.Add(160*time.Hour) })),
				at(now.Add(80*time.Hour-time.Second))),
		},
		"shortlived 160h certificate at half-life": {
			in: input(secret(with(healthy, func(c *cert) { c.notBefore, c.notAfter = now, now.Add(160*time.Hour) })),
				at(now.Add(80*time.Hour))),
			wantReason: ReasonRenewalDue,
		},
		"ARI renewal time earlier than renewBefore's": {
			in:         input(secret(healthy), func(in *Input) { in.RenewalTime = now.Add(-time.Minute) }),
			wantReason: ReasonRenewalDue,
		},
		"ARI renewal time later than renewBefore's": {
			in: input(secret(healthy), at(healthy.notAfter.Add(-6*day)), func(in *Input) { in.RenewalTime = healthy.notAfter.Add(-5 * day) }),
		},
		"renewal requested": {
			in:          input(secret(healthy), func(in *Input) { in.RenewalRequested = true }),
			wantReason:  ReasonRenewalRequested,
			wantMessage: []string{"certpilot.dev/renew"},
		},
		"broken key wins over expiry and a request": {
			in: input(func() *Secret { s := secret(healthy); s.PrivateKeyPEM = []byte("junk"); return s }(),
				at(healthy.notAfter.Add(time.Hour)), func(in *Input) { in.RenewalRequested = true }),
			wantReason: ReasonInvalidPrivateKey,
		},
		"changed names win over expiry": {
			in: input(secret(healthy), at(healthy.notAfter.Add(time.Hour)), func(in *Input) {
				in.DNSNames = []string{"www.example.com"}
			}),
			wantReason: ReasonDNSNamesChanged,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, issue := ShouldIssue(tc.in)
			if tc.wantReason == "" {
				if issue || got != (Trigger{}) {
					t.Fatalf("ShouldIssue() = (%+v, %v), want no issuance", got, issue)
				}
				return
			}
			if !issue || got.Reason != tc.wantReason {
				t.Fatalf("ShouldIssue() = (%+v, %v), want reason %s", got, issue, tc.wantReason)
			}
			if got.Message == "" {
				t.Errorf("ShouldIssue() message is empty, want a sentence")
			}
			for _, want := range tc.wantMessage {
				if !strings.Contains(got.Message, want) {
					t.Errorf("ShouldIssue() message %q does not contain %q", got.Message, want)
				}
			}
		})
	}
}

func TestDefaultKeySize(t *testing.T) {
	tests := map[string]struct {
		algorithm string
		want      int
	}{
		"ECDSA is P-256":             {algorithm: "ECDSA", want: 256},
		"empty is the ECDSA default": {algorithm: "", want: 256},
		"RSA is 2048":                {algorithm: "RSA", want: 2048},
		"unknown has no default":     {algorithm: "Ed25519", want: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := DefaultKeySize(tc.algorithm); got != tc.want {
				t.Errorf("DefaultKeySize(%q) = %d, want %d", tc.algorithm, got, tc.want)
			}
		})
	}
}
