package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
)

// CreateCSR returns a DER-encoded certificate signing request for names (DNS names and IP
// addresses) signed by key. Every name is a subject alternative name (a DNS name or an IP
// address), which is what clients and CAs actually check. The first DNS name is also the
// subject's CommonName (what `openssl x509 -subject` and the kubectl plugin show); an IP address
// never is (CAs refuse it there), so a certificate for IP addresses only has an empty subject.
func CreateCSR(key crypto.Signer, names []string) ([]byte, error) {
	if len(names) == 0 {
		return nil, errors.New("creating CSR: no names")
	}
	dnsNames, ips := SplitNames(names)
	template := &x509.CertificateRequest{DNSNames: dnsNames, IPAddresses: ips}
	if len(dnsNames) > 0 {
		template.Subject = pkix.Name{CommonName: dnsNames[0]}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, template, key)
	if err != nil {
		return nil, fmt.Errorf("creating CSR for %v: %w", names, err)
	}
	return der, nil
}
