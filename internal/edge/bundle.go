package edge

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Keys of a certificate Secret (kubernetes.io/tls, plus certpilot's bundle; see
// api/v1alpha1.BundleKey) and so names of the files of its mounted volume.
const (
	secretCertificateKey = "tls.crt"
	secretPrivateKeyKey  = "tls.key"
	secretBundleKey      = "bundle.pem"
)

// ParseBundle parses one PEM bundle: a private key and its certificate chain, in any order (the
// leaf is the certificate that matches the key; the others follow it in their order). This is
// what certpilot writes as bundle.pem and what one entry of Kontena's SSL_CERTS holds.
func ParseBundle(data []byte) (*tls.Certificate, error) {
	var keyPEM []byte
	var certificates []*pem.Block
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE":
			certificates = append(certificates, block)
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			if keyPEM != nil {
				return nil, errors.New("more than one private key in one bundle")
			}
			keyPEM = pem.EncodeToMemory(block)
		}
	}
	if keyPEM == nil {
		return nil, errors.New("no private key")
	}
	if len(certificates) == 0 {
		return nil, errors.New("no certificate")
	}
	// The leaf is the first certificate whose public key is the key's: bundles put the leaf
	// first, but a key-last or chain-first bundle is still unambiguous. The key is parsed once
	// and each certificate once; trying each certificate as the leaf with tls.X509KeyPair cost
	// a parse of the key and of the whole chain per certificate, quadratic in their number (a
	// 550 KiB bundle of 1,000 certificates took 13 s).
	leaf := 0
	if public := bundlePublicKey(keyPEM); public != nil {
		for i, block := range certificates {
			if cert, err := x509.ParseCertificate(block.Bytes); err == nil && public.Equal(cert.PublicKey) {
				leaf = i
				break
			}
		}
	}
	ordered := append([]*pem.Block{certificates[leaf]}, certificates[:leaf]...)
	ordered = append(ordered, certificates[leaf+1:]...)
	var chainPEM []byte
	for _, block := range ordered {
		chainPEM = append(chainPEM, pem.EncodeToMemory(block)...)
	}
	return LoadKeyPair(chainPEM, keyPEM)
}

// bundlePublicKey returns the public key of a private key PEM block, parsed as tls.X509KeyPair
// parses it (PKCS #1, PKCS #8 or SEC 1, whatever the block type says), or nil.
func bundlePublicKey(keyPEM []byte) interface{ Equal(crypto.PublicKey) bool } {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil
	}
	var key any
	var err error
	if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
			if key, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
				return nil
			}
		}
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil
	}
	public, _ := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	return public
}

// LoadKeyPair parses a PEM certificate chain (leaf first) and its PEM private key, with the
// leaf parsed.
func LoadKeyPair(chainPEM, keyPEM []byte) (*tls.Certificate, error) {
	certificate, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if certificate.Leaf == nil {
		if certificate.Leaf, err = x509.ParseCertificate(certificate.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &certificate, nil
}

// ParseBundles parses Kontena's SSL_CERTS format: one or more PEM bundles (each a private key
// and its certificate chain) concatenated. A bundle ends where the next one starts: at the next
// private key when the bundles put the key first, or at the first certificate after a key when
// they put it last. Bad bundles are skipped and reported in the error; the good ones are
// returned.
func ParseBundles(data []byte) ([]*tls.Certificate, error) {
	var groups [][]*pem.Block
	var current []*pem.Block
	keyFirst := false
	hasKey := func(blocks []*pem.Block) bool {
		for _, block := range blocks {
			if strings.HasSuffix(block.Type, "PRIVATE KEY") {
				return true
			}
		}
		return false
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		isKey := strings.HasSuffix(block.Type, "PRIVATE KEY")
		if !isKey && block.Type != "CERTIFICATE" {
			continue
		}
		if len(groups) == 0 && len(current) == 0 {
			keyFirst = isKey
		}
		startsNew := len(current) > 0 && ((keyFirst && isKey) || (!keyFirst && !isKey && hasKey(current)))
		if startsNew {
			groups = append(groups, current)
			current = nil
		}
		current = append(current, block)
	}
	if len(current) > 0 {
		groups = append(groups, current)
	}

	var certificates []*tls.Certificate
	var errs []error
	for i, group := range groups {
		var bundle []byte
		for _, block := range group {
			bundle = append(bundle, pem.EncodeToMemory(block)...)
		}
		certificate, err := ParseBundle(bundle)
		if err != nil {
			errs = append(errs, fmt.Errorf("bundle %d: %w", i+1, err))
			continue
		}
		certificates = append(certificates, certificate)
	}
	if len(groups) == 0 {
		errs = append(errs, errors.New("no PEM bundle found"))
	}
	return certificates, errors.Join(errs...)
}

// certificateFromFiles returns the certificate held by a certificate Secret's data or the files
// of its mounted volume: tls.crt with tls.key, else bundle.pem. ok is false when neither is
// there (not a certificate Secret).
func certificateFromFiles(files map[string][]byte) (certificate *tls.Certificate, ok bool, err error) {
	if chainPEM, keyPEM := files[secretCertificateKey], files[secretPrivateKeyKey]; len(chainPEM) > 0 && len(keyPEM) > 0 {
		certificate, err = LoadKeyPair(chainPEM, keyPEM)
		return certificate, true, err
	}
	if bundle := files[secretBundleKey]; len(bundle) > 0 {
		certificate, err = ParseBundle(bundle)
		return certificate, true, err
	}
	return nil, false, nil
}
