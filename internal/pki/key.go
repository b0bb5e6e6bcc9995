package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Key algorithms, spelled as in the Certificate API's privateKey.algorithm.
const (
	ECDSA = "ECDSA"
	RSA   = "RSA"
)

// PEM block types for private keys. PKCS #8 is what certpilot writes; the other two are what
// older tools (openssl before 3.0, cert-manager's PKCS#1 encoding) leave in existing Secrets.
const (
	pemTypePKCS8PrivateKey = "PRIVATE KEY"
	pemTypeECPrivateKey    = "EC PRIVATE KEY"
	pemTypeRSAPrivateKey   = "RSA PRIVATE KEY"
	pemTypeCertificate     = "CERTIFICATE"
)

// GenerateKey returns a new private key: ECDSA with size 256 (P-256) or 384 (P-384), or RSA with
// size 2048, 3072 or 4096 bits. Other combinations are refused rather than rounded, so a typo in
// a spec is reported instead of silently producing a different key.
func GenerateKey(algorithm string, size int) (crypto.Signer, error) {
	switch algorithm {
	case ECDSA:
		var curve elliptic.Curve
		switch size {
		case 256:
			curve = elliptic.P256()
		case 384:
			curve = elliptic.P384()
		default:
			return nil, fmt.Errorf("unsupported ECDSA key size %d: use 256 or 384", size)
		}
		key, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating ECDSA P-%d key: %w", size, err)
		}
		return key, nil
	case RSA:
		switch size {
		case 2048, 3072, 4096:
		default:
			return nil, fmt.Errorf("unsupported RSA key size %d: use 2048, 3072 or 4096", size)
		}
		key, err := rsa.GenerateKey(rand.Reader, size)
		if err != nil {
			return nil, fmt.Errorf("generating RSA %d key: %w", size, err)
		}
		return key, nil
	default:
		return nil, fmt.Errorf("unsupported key algorithm %q: use %q or %q", algorithm, ECDSA, RSA)
	}
}

// EncodePrivateKey returns key as a PKCS #8 "PRIVATE KEY" PEM block.
func EncodePrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypePKCS8PrivateKey, Bytes: der}), nil
}

// DecodePrivateKey parses the first private key PEM block in data: PKCS #8 ("PRIVATE KEY"),
// SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY"). Other blocks before it (for example
// the certificates of a combined bundle, or EC PARAMETERS) are skipped.
func DecodePrivateKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no private key PEM block found")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case pemTypePKCS8PrivateKey:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case pemTypeECPrivateKey:
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case pemTypeRSAPrivateKey:
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %q PEM block: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
}

// PublicKeyAlgorithm returns the algorithm (ECDSA or RSA) and size (curve bits or modulus bits)
// of a public key, in the terms GenerateKey takes, so a controller can compare an existing
// certificate with its spec.
func PublicKeyAlgorithm(pub crypto.PublicKey) (algorithm string, size int, err error) {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		return ECDSA, pub.Curve.Params().BitSize, nil
	case *rsa.PublicKey:
		return RSA, pub.N.BitLen(), nil
	default:
		return "", 0, fmt.Errorf("unsupported public key type %T", pub)
	}
}

// KeyMatches reports whether key is the private key of cert. A Secret whose key and certificate
// disagree (a half-written update, a hand edit) must be reissued, not served.
func KeyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	if cert == nil || key == nil {
		return false
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(key.Public())
}
