package edge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// StaticCertificates is a CertificateSource that serves a fixed set of certificates by SNI: the
// certificate naming the server name exactly wins over one whose wildcard covers it, and the
// default (if any) answers every other name, including a ClientHello without SNI.
type StaticCertificates struct {
	byName      map[string]*tls.Certificate
	defaultCert *tls.Certificate
}

var _ CertificateSource = (*StaticCertificates)(nil)

// NewStaticCertificates indexes certificates by the DNS names of their leaves. When two
// certificates name the same DNS name, the first wins. defaultCertificate may be nil: unknown
// names then fail the handshake.
func NewStaticCertificates(certificates []*tls.Certificate, defaultCertificate *tls.Certificate) (*StaticCertificates, error) {
	source := &StaticCertificates{byName: map[string]*tls.Certificate{}, defaultCert: defaultCertificate}
	if defaultCertificate != nil {
		if _, err := leafOf(defaultCertificate); err != nil {
			return nil, fmt.Errorf("default certificate: %w", err)
		}
	}
	for i, certificate := range certificates {
		leaf, err := leafOf(certificate)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		for _, name := range leaf.DNSNames {
			name = strings.ToLower(name)
			if _, taken := source.byName[name]; !taken {
				source.byName[name] = certificate
			}
		}
	}
	return source, nil
}

// GetCertificate implements CertificateSource.
func (s *StaticCertificates) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name != "" {
		if certificate, ok := s.byName[name]; ok {
			return certificate, nil
		}
		// A wildcard covers exactly one label: *.example.com covers a.example.com, not
		// example.com nor a.b.example.com.
		if _, parent, ok := strings.Cut(name, "."); ok && parent != "" {
			if certificate, ok := s.byName["*."+parent]; ok {
				return certificate, nil
			}
		}
	}
	if s.defaultCert != nil {
		return s.defaultCert, nil
	}
	return nil, fmt.Errorf("certpilot edge: no certificate for server name %q", hello.ServerName)
}

// leafOf returns the parsed leaf of certificate, parsing and caching it when tls.X509KeyPair did
// not (older GODEBUG settings) or the certificate was built by hand.
func leafOf(certificate *tls.Certificate) (*x509.Certificate, error) {
	if certificate.Leaf != nil {
		return certificate.Leaf, nil
	}
	if len(certificate.Certificate) == 0 {
		return nil, errors.New("no certificate data")
	}
	leaf, err := x509.ParseCertificate(certificate.Certificate[0])
	if err != nil {
		return nil, err
	}
	certificate.Leaf = leaf
	return leaf, nil
}
