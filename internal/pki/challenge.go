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
	"net"
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
// validator that connects with ALPN acme-tls/1 and SNI TLSALPN01ServerName(dnsName) (RFC 8737;
// for an IP address RFC 8738, whose validator sends the reverse-DNS name): its only subject
// alternative name is dnsName (a DNS name, or an IP address as an iPAddress name) and its
// critical acmeIdentifier extension holds the SHA-256 of keyAuthorization. The result is the
// contract's encoding: the certificate PEM, then its fresh P-256 key's PEM.
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
		ExtraExtensions:       []pkix.Extension{{Id: idPeAcmeIdentifier, Critical: true, Value: extension}},
	}
	if addr, ok := ParseIP(dnsName); ok {
		template.IPAddresses = []net.IP{addr.AsSlice()}
	} else {
		template.DNSNames = []string{dnsName}
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
