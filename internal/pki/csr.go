package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
)

// CreateCSR returns a DER-encoded certificate signing request for dnsNames signed by key. The
// first name is the subject's CommonName (what `openssl x509 -subject` and the kubectl plugin
// show); all names, the first included, are subject alternative names, which is what clients
// and CAs actually check.
func CreateCSR(key crypto.Signer, dnsNames []string) ([]byte, error) {
	if len(dnsNames) == 0 {
		return nil, errors.New("creating CSR: no DNS names")
	}
	template := &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: dnsNames[0]},
		DNSNames: dnsNames,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, template, key)
	if err != nil {
		return nil, fmt.Errorf("creating CSR for %v: %w", dnsNames, err)
	}
	return der, nil
}
