package pki

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	"golang.org/x/crypto/hkdf"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// Keystores: the certificate as PKCS#12 (software.sslmate.com/src/go-pkcs12, the maintained
// fork of x/crypto/pkcs12 that cert-manager uses, with the Modern2023 encoder) and as a Java
// KeyStore (github.com/pavlo-v-chernykh/keystore-go, also cert-manager's). Both libraries take
// a source of randomness for the salts and IVs they write into the file; certpilot gives them
// one derived from the inputs (keystoreRand), so the same key, chain, password and profile
// always encode to the same bytes. A controller can then tell whether a Secret's keystore is up
// to date by encoding again and comparing, with nothing recorded beside it.

// PKCS#12 profiles, the values of spec.keystores.pkcs12.profile.
const (
	PKCS12Modern2023   = "Modern2023"
	PKCS12LegacyDES    = "LegacyDES"
	PKCS12LegacyRC2    = "LegacyRC2"
	PKCS12Passwordless = "Passwordless"
)

// PasswordError says why a password cannot protect a keystore; it never holds the password.
type PasswordError struct{ Reason string }

func (e *PasswordError) Error() string { return e.Reason }

// KeystoreInput is what a keystore is made of: the private key (PEM), the chain (leaf first,
// PEM) and the CA certificates a trust store holds (PEM; may be empty).
type KeystoreInput struct {
	KeyPEM, ChainPEM, CAPEM []byte
}

// parsed is a KeystoreInput decoded.
type parsed struct {
	key    crypto.Signer
	keyDER []byte // PKCS #8
	chain  []*x509.Certificate
	cas    []*x509.Certificate
}

func (in KeystoreInput) parse() (*parsed, error) {
	key, err := DecodePrivateKey(in.KeyPEM)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	chain, err := ParseChain(in.ChainPEM)
	if err != nil {
		return nil, err
	}
	if !KeyMatches(chain[0], key) {
		return nil, errors.New("the private key does not belong to the certificate")
	}
	p := &parsed{key: key, keyDER: keyDER, chain: chain}
	if len(bytes.TrimSpace(in.CAPEM)) > 0 {
		if p.cas, err = ParseChain(in.CAPEM); err != nil {
			return nil, fmt.Errorf("ca.crt: %w", err)
		}
	}
	return p, nil
}

// EncodePKCS12 returns the PKCS#12 keystore of in: the private key, the leaf, and as CA
// certificates the rest of the chain followed by the certificates of in.CAPEM the chain does
// not already hold. profile is one of the PKCS12 constants; password must be empty for
// PKCS12Passwordless and is required otherwise.
func EncodePKCS12(in KeystoreInput, profile string, password []byte) ([]byte, error) {
	p, err := in.parse()
	if err != nil {
		return nil, err
	}
	encoder, err := pkcs12Encoder(profile, password)
	if err != nil {
		return nil, err
	}
	cas := slices.Clone(p.chain[1:])
	for _, ca := range p.cas {
		if !containsCertificate(cas, ca) {
			cas = append(cas, ca)
		}
	}
	rand := keystoreRand(p.keyDER, "pkcs12 keystore", []byte(profile), password, in.ChainPEM, in.CAPEM)
	return encoder.WithRand(rand).Encode(p.key, p.chain[0], cas, string(password))
}

// EncodePKCS12TrustStore returns the PKCS#12 trust store of in.CAPEM (each certificate marked
// trusted for Java, named by its subject), or nil when in.CAPEM holds no certificate.
func EncodePKCS12TrustStore(in KeystoreInput, profile string, password []byte) ([]byte, error) {
	p, err := in.parse()
	if err != nil || len(p.cas) == 0 {
		return nil, err
	}
	encoder, err := pkcs12Encoder(profile, password)
	if err != nil {
		return nil, err
	}
	rand := keystoreRand(p.keyDER, "pkcs12 truststore", []byte(profile), password, in.CAPEM)
	return encoder.WithRand(rand).EncodeTrustStore(p.cas, string(password))
}

// CheckPKCS12Password returns a *PasswordError when password cannot protect a PKCS#12 file of
// profile (EncodePKCS12 would refuse it).
func CheckPKCS12Password(profile string, password []byte) error {
	_, err := pkcs12Encoder(profile, password)
	return err
}

// pkcs12Encoder is profile's encoder, after checking that password suits it: PKCS#12 passwords
// are BMPStrings, so only UTF-8 text of characters up to U+FFFF can be one.
func pkcs12Encoder(profile string, password []byte) (*pkcs12.Encoder, error) {
	if profile == PKCS12Passwordless {
		if len(password) > 0 {
			return nil, &PasswordError{Reason: "the Passwordless PKCS#12 profile takes no password"}
		}
		return pkcs12.Passwordless, nil
	}
	if len(password) == 0 {
		return nil, &PasswordError{Reason: "the password is empty; for a PKCS#12 keystore without a password use the Passwordless profile"}
	}
	if !utf8.Valid(password) {
		return nil, &PasswordError{Reason: "a PKCS#12 password must be UTF-8 text"}
	}
	for _, r := range string(password) {
		if r > 0xFFFF || r == 0 {
			return nil, &PasswordError{Reason: "a PKCS#12 password cannot hold NUL or characters beyond U+FFFF (emoji, for example)"}
		}
	}
	switch profile {
	case PKCS12Modern2023, "":
		return pkcs12.Modern2023, nil
	case PKCS12LegacyDES:
		return pkcs12.LegacyDES, nil
	case PKCS12LegacyRC2:
		return pkcs12.LegacyRC2, nil
	default:
		return nil, fmt.Errorf("unknown PKCS#12 profile %q", profile)
	}
}

// EncodeJKS returns the Java KeyStore of in: one private key entry, alias, holding the key and
// the chain, protected (entry and store) by password. Its creation time is the leaf's notBefore,
// so the same input always gives the same bytes.
func EncodeJKS(in KeystoreInput, alias string, password []byte) ([]byte, error) {
	p, err := in.parse()
	if err != nil {
		return nil, err
	}
	if err := CheckJKSPassword(password); err != nil {
		return nil, err
	}
	chain := make([]keystore.Certificate, 0, len(p.chain))
	for _, cert := range p.chain {
		chain = append(chain, keystore.Certificate{Type: "X509", Content: cert.Raw})
	}
	rand := keystoreRand(p.keyDER, "jks keystore", []byte(alias), password, in.ChainPEM)
	ks := keystore.New(keystore.WithOrderedAliases(), keystore.WithCustomRandomNumberGenerator(rand))
	entry := keystore.PrivateKeyEntry{CreationTime: p.chain[0].NotBefore, PrivateKey: p.keyDER, CertificateChain: chain}
	if err := ks.SetPrivateKeyEntry(alias, entry, bytes.Clone(password)); err != nil {
		return nil, fmt.Errorf("JKS private key entry: %w", err)
	}
	return storeJKS(ks, password)
}

// EncodeJKSTrustStore returns a Java KeyStore with a trusted certificate entry for each
// certificate of in.CAPEM (aliases "ca", "ca-1", "ca-2", ...), or nil when it holds none.
func EncodeJKSTrustStore(in KeystoreInput, password []byte) ([]byte, error) {
	p, err := in.parse()
	if err != nil || len(p.cas) == 0 {
		return nil, err
	}
	if err := CheckJKSPassword(password); err != nil {
		return nil, err
	}
	ks := keystore.New(keystore.WithOrderedAliases())
	for i, ca := range p.cas {
		alias := "ca"
		if i > 0 {
			alias = fmt.Sprintf("ca-%d", i)
		}
		entry := keystore.TrustedCertificateEntry{CreationTime: p.chain[0].NotBefore, Certificate: keystore.Certificate{Type: "X509", Content: ca.Raw}}
		if err := ks.SetTrustedCertificateEntry(alias, entry); err != nil {
			return nil, fmt.Errorf("JKS trusted certificate entry: %w", err)
		}
	}
	return storeJKS(ks, password)
}

func storeJKS(ks keystore.KeyStore, password []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := ks.Store(&buf, bytes.Clone(password)); err != nil {
		return nil, fmt.Errorf("writing the JKS: %w", err)
	}
	return buf.Bytes(), nil
}

// CheckJKSPassword returns a *PasswordError when password cannot protect a Java KeyStore: Java
// hashes a password as Java chars, keystore-go takes each byte as one char, which is the same
// only for ASCII.
func CheckJKSPassword(password []byte) error {
	if len(password) == 0 {
		return &PasswordError{Reason: "the password is empty; a Java KeyStore needs one"}
	}
	for _, b := range password {
		if b >= utf8.RuneSelf {
			return &PasswordError{Reason: "a Java KeyStore password must be ASCII"}
		}
	}
	return nil
}

// EncodeKeyDER returns the private key of keyPEM as PKCS #8 DER.
func EncodeKeyDER(keyPEM []byte) ([]byte, error) {
	key, err := DecodePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	return x509.MarshalPKCS8PrivateKey(key)
}

// keystoreRand is the randomness a keystore encoder draws its salts and IVs from: HKDF-SHA-256
// with the private key as secret, over purpose and parts. Everything drawn from it is written
// into the file in the clear (salts and IVs need to be unique and unpredictable, not secret), and
// an attacker who does not hold the private key cannot predict it; the same inputs draw the same
// bytes, so a keystore is encoded again to the same bytes.
func keystoreRand(keyDER []byte, purpose string, parts ...[]byte) io.Reader {
	info := []byte("certpilot " + purpose)
	for _, part := range parts {
		info = binary.BigEndian.AppendUint64(info, uint64(len(part)))
		info = append(info, part...)
	}
	return hkdf.New(sha256.New, keyDER, nil, info)
}

func containsCertificate(certs []*x509.Certificate, cert *x509.Certificate) bool {
	for _, c := range certs {
		if c.Equal(cert) {
			return true
		}
	}
	return false
}
