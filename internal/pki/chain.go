package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// EncodeChain returns DER certificates (leaf first, as ACME delivers them) as concatenated
// "CERTIFICATE" PEM blocks: the tls.crt of a kubernetes.io/tls Secret.
func EncodeChain(der [][]byte) []byte {
	var buf bytes.Buffer
	for _, cert := range der {
		// pem.Encode only fails on invalid headers, and there are none.
		_ = pem.Encode(&buf, &pem.Block{Type: pemTypeCertificate, Bytes: cert})
	}
	return buf.Bytes()
}

// ParseChain parses every "CERTIFICATE" block of a PEM chain, in order, skipping other blocks.
func ParseChain(pemChain []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, pemChain = pem.Decode(pemChain)
		if block == nil {
			break
		}
		if block.Type != pemTypeCertificate {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d of the chain: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE PEM block found")
	}
	return certs, nil
}

// ParseLeaf returns the first certificate of a PEM chain: the leaf, by ACME's and TLS's order.
func ParseLeaf(pemChain []byte) (*x509.Certificate, error) {
	certs, err := ParseChain(pemChain)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// Bundle returns the private key followed by the chain (leaf, then intermediates) as one PEM
// file, the format HAProxy's `crt` and several other load balancers read.
func Bundle(keyPEM, chainPEM []byte) []byte {
	bundle := make([]byte, 0, len(keyPEM)+len(chainPEM)+1)
	bundle = append(bundle, keyPEM...)
	if len(keyPEM) > 0 && keyPEM[len(keyPEM)-1] != '\n' {
		bundle = append(bundle, '\n')
	}
	return append(bundle, chainPEM...)
}

// DNSNamesEqual reports whether cert's DNS subject alternative names are exactly dnsNames,
// ignoring order, case and duplicates: the names a spec asks for are a set, and a CA may
// reorder them.
func DNSNamesEqual(cert *x509.Certificate, dnsNames []string) bool {
	if cert == nil {
		return false
	}
	return slices.Equal(normalizeNames(cert.DNSNames), normalizeNames(dnsNames))
}

func normalizeNames(names []string) []string {
	normalized := make([]string, 0, len(names))
	for _, name := range names {
		normalized = append(normalized, strings.ToLower(strings.TrimSuffix(name, ".")))
	}
	slices.Sort(normalized)
	return slices.Compact(normalized)
}
