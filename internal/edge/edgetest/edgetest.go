// Package edgetest helps tests talk to an edge the way an ACME validator and a browser do: it
// makes tls-alpn-01 challenge certificates in the challenge Secret's format, dials with or
// without ALPN "acme-tls/1", and checks what was served.
package edgetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/certpilot/certpilot/internal/pki"
)

// IDPeACMEIdentifier is the acmeIdentifier extension of RFC 8737, section 3.
var IDPeACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// Account is an ACME account key, enough to make challenge responses offline.
type Account struct {
	Client *acme.Client
}

// NewAccount returns an account with a fresh P-256 key.
func NewAccount(tb testing.TB) *Account {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return &Account{Client: &acme.Client{Key: key}}
}

// KeyAuthorization returns token's key authorization (RFC 8555, 8.1).
func (a *Account) KeyAuthorization(tb testing.TB, token string) string {
	tb.Helper()
	thumbprint, err := acme.JWKThumbprint(a.Client.Key.Public())
	if err != nil {
		tb.Fatal(err)
	}
	return token + "." + thumbprint
}

// ChallengeCertificatePEM returns the tls-alpn-01 challenge certificate for token and dnsName
// as the challenge Secret holds it: the certificate PEM, then its PKCS #8 private key PEM.
func (a *Account) ChallengeCertificatePEM(tb testing.TB, token, dnsName string) []byte {
	tb.Helper()
	certificate, err := a.Client.TLSALPN01ChallengeCert(token, dnsName)
	if err != nil {
		tb.Fatal(err)
	}
	return CertificatePEM(tb, &certificate)
}

// CertificatePEM encodes a certificate chain followed by its PKCS #8 private key.
func CertificatePEM(tb testing.TB, certificate *tls.Certificate) []byte {
	tb.Helper()
	var out []byte
	for _, der := range certificate.Certificate {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(certificate.PrivateKey)
	if err != nil {
		tb.Fatal(err)
	}
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
}

// SelfSignedCertificate returns an ordinary self-signed server certificate for dnsNames (an IP
// address among them becomes an iPAddress name), with its Leaf set.
func SelfSignedCertificate(tb testing.TB, dnsNames ...string) *tls.Certificate {
	tb.Helper()
	return CertificateValid(tb, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), dnsNames...)
}

// Handshake dials address over TCP and completes a TLS handshake with SNI serverName, offering
// nextProtos (nil: no ALPN). It does not verify the server's certificate (challenge
// certificates are self-signed): check the returned state. maxVersion 0 means any.
func Handshake(ctx context.Context, address, serverName string, nextProtos []string, maxVersion uint16) (tls.ConnectionState, error) {
	dialer := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{
			ServerName:         serverName,
			NextProtos:         nextProtos,
			InsecureSkipVerify: true, // the caller checks the certificate itself
			MaxVersion:         maxVersion,
		},
	}
	conn, err := dialer.DialContext(ctx, "tcp", address)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState(), nil
}

// ValidateChallenge does what a tls-alpn-01 validator does (RFC 8737, section 3): it dials with
// SNI dnsName and ALPN "acme-tls/1" only, and checks that the server negotiated "acme-tls/1"
// and presented a certificate naming only dnsName with a critical acmeIdentifier extension
// holding the SHA-256 digest of keyAuthorization.
func ValidateChallenge(ctx context.Context, address, dnsName, keyAuthorization string) error {
	state, err := Handshake(ctx, address, dnsName, []string{acme.ALPNProto}, 0)
	if err != nil {
		return err
	}
	return CheckChallengeState(state, dnsName, keyAuthorization)
}

// CheckChallengeState checks a handshake's state as ValidateChallenge does.
func CheckChallengeState(state tls.ConnectionState, dnsName, keyAuthorization string) error {
	if state.NegotiatedProtocol != acme.ALPNProto {
		return fmt.Errorf("negotiated protocol %q, want %q", state.NegotiatedProtocol, acme.ALPNProto)
	}
	if len(state.PeerCertificates) != 1 {
		return fmt.Errorf("server sent %d certificates, want exactly the challenge certificate", len(state.PeerCertificates))
	}
	leaf := state.PeerCertificates[0]
	if !slices.Equal(leaf.DNSNames, []string{dnsName}) || len(leaf.IPAddresses) != 0 {
		return fmt.Errorf("certificate names %v %v, want only %q", leaf.DNSNames, leaf.IPAddresses, dnsName)
	}
	value, critical, ok := ACMEIdentifier(leaf)
	if !ok {
		return errors.New("certificate has no acmeIdentifier extension")
	}
	if !critical {
		return errors.New("acmeIdentifier extension is not critical")
	}
	digest := sha256.Sum256([]byte(keyAuthorization))
	var got []byte
	if rest, err := asn1.Unmarshal(value, &got); err != nil || len(rest) != 0 {
		return fmt.Errorf("acmeIdentifier is not a DER OCTET STRING: %v", err)
	}
	if !slices.Equal(got, digest[:]) {
		return errors.New("acmeIdentifier does not hold the digest of the expected key authorization")
	}
	return nil
}

// ACMEIdentifier returns the value of certificate's acmeIdentifier extension and whether it is
// critical; ok is false when it has none.
func ACMEIdentifier(certificate *x509.Certificate) (value []byte, critical, ok bool) {
	for _, extension := range certificate.Extensions {
		if extension.Id.Equal(IDPeACMEIdentifier) {
			return extension.Value, extension.Critical, true
		}
	}
	return nil, false, false
}

// Eventually calls check until it returns nil or timeout passes, then fails tb with the last
// error. It polls observable behaviour (a handshake, a request), never sleeps blindly.
func Eventually(tb testing.TB, timeout time.Duration, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	interval := 10 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(interval)
		interval = min(2*interval, 200*time.Millisecond)
	}
}

// CertificateValid returns an ordinary self-signed ECDSA P-256 server certificate for dnsNames,
// valid from notBefore to notAfter, with its Leaf set.
func CertificateValid(tb testing.TB, notBefore, notAfter time.Time, dnsNames ...string) *tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		tb.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "certpilot test"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	template.DNSNames, template.IPAddresses = pki.SplitNames(dnsNames)
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// ChainPEM encodes only certificate's chain (tls.crt of a kubernetes.io/tls Secret).
func ChainPEM(certificate *tls.Certificate) []byte {
	var out []byte
	for _, der := range certificate.Certificate {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

// KeyPEM encodes only certificate's private key as PKCS #8 (tls.key).
func KeyPEM(tb testing.TB, certificate *tls.Certificate) []byte {
	tb.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(certificate.PrivateKey)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// ServedLeaf dials address with SNI serverName (no ALPN) and returns the leaf it was served.
func ServedLeaf(ctx context.Context, address, serverName string) (*x509.Certificate, error) {
	state, err := Handshake(ctx, address, serverName, nil, 0)
	if err != nil {
		return nil, err
	}
	return state.PeerCertificates[0], nil
}
