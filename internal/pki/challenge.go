package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// idPeAcmeIdentifier is the acmeIdentifier certificate extension (RFC 8737 section 6.1).
var idPeAcmeIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// TLSALPN01Validity is how long a tls-alpn-01 challenge certificate is valid. A response left
// behind (a controller that died and never came back for the order) stops blocking its name
// once it has expired.
const TLSALPN01Validity = time.Hour

// TLSALPN01Certificate returns the self-signed certificate a load balancer presents to a
// validator that connects with SNI dnsName and ALPN acme-tls/1 (RFC 8737): its only name is
// dnsName and its critical acmeIdentifier extension holds the SHA-256 of keyAuthorization. The
// result is the contract's encoding: the certificate PEM, then its fresh P-256 key's PEM.
func TLSALPN01Certificate(dnsName, keyAuthorization string, now time.Time) ([]byte, error) {
	if dnsName == "" || keyAuthorization == "" {
		return nil, errors.New("tls-alpn-01 certificate: empty name or key authorization")
	}
	if strings.HasPrefix(dnsName, "*.") {
		return nil, fmt.Errorf("tls-alpn-01 cannot validate wildcard %s: use dns-01", dnsName)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256([]byte(keyAuthorization))
	extension, err := asn1.Marshal(digest[:])
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ACME tls-alpn-01 challenge"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(TLSALPN01Validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{dnsName},
		ExtraExtensions:       []pkix.Extension{{Id: idPeAcmeIdentifier, Critical: true, Value: extension}},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating the tls-alpn-01 certificate for %s: %w", dnsName, err)
	}
	keyPEM, err := EncodePrivateKey(key)
	if err != nil {
		return nil, err
	}
	return append(EncodeChain([][]byte{der}), keyPEM...), nil
}
