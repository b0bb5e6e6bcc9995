package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

// fuzzSeeds returns realistic inputs for the PEM parsers, made fresh with crypto/x509: a leaf
// and CA chain, the leaf's key in each encoding certpilot reads, a bundle, a tls-alpn-01
// response, and near misses (a truncated block, a key where a certificate belongs).
func fuzzSeeds(f *testing.F) [][]byte {
	f.Helper()
	now := time.Now()
	caKey, err := GenerateKey(ECDSA, 256)
	if err != nil {
		f.Fatal(err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		f.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		f.Fatal(err)
	}
	// RSA 1024 keeps the seeds small; the parsers do not care about the size.
	leafKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		f.Fatal(err)
	}
	leafTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "example.test"},
		DNSNames:  []string{"example.test", "www.example.test"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTemplate, ca, leafKey.Public(), caKey)
	if err != nil {
		f.Fatal(err)
	}
	chain := EncodeChain([][]byte{leafDER, caDER})
	pkcs8, err := EncodePrivateKey(leafKey)
	if err != nil {
		f.Fatal(err)
	}
	ecPKCS8, err := EncodePrivateKey(caKey)
	if err != nil {
		f.Fatal(err)
	}
	sec1DER, err := x509.MarshalECPrivateKey(caKey.(*ecdsa.PrivateKey))
	if err != nil {
		f.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: pemTypeECPrivateKey, Bytes: sec1DER})
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: pemTypeRSAPrivateKey, Bytes: x509.MarshalPKCS1PrivateKey(leafKey)})
	challenge, err := TLSALPN01Certificate("www.example.test", "token.thumbprint", now)
	if err != nil {
		f.Fatal(err)
	}
	return [][]byte{
		chain, pkcs8, ecPKCS8, sec1, pkcs1, Bundle(pkcs8, chain), challenge,
		chain[:len(chain)/2],
		pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: x509.MarshalPKCS1PrivateKey(leafKey)}),
		pem.EncodeToMemory(&pem.Block{Type: pemTypePKCS8PrivateKey, Bytes: sec1DER}),
		nil,
	}
}

// FuzzParseChain checks the chain parser on what a Secret's tls.crt or bundle.pem may hold: a
// chain it accepts is exactly the input's CERTIFICATE blocks, in order, and survives the round
// trip through EncodeChain; ParseLeaf agrees with it; an error never repeats private key bytes
// (bundle.pem holds the key next to the chain).
func FuzzParseChain(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseChain(data)
		leaf, leafErr := ParseLeaf(data)
		if (err == nil) != (leafErr == nil) {
			t.Fatalf("ParseChain error %v, ParseLeaf error %v: they disagree", err, leafErr)
		}
		if err != nil {
			if leak := secretLeak(err.Error(), data); leak != "" {
				t.Fatalf("ParseChain's error %q repeats private key bytes %q", err, leak)
			}
			return
		}
		var blocks [][]byte
		for rest := data; ; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			if block.Type == pemTypeCertificate {
				blocks = append(blocks, block.Bytes)
			}
		}
		if len(certs) != len(blocks) {
			t.Fatalf("ParseChain returned %d certificates from %d CERTIFICATE blocks", len(certs), len(blocks))
		}
		raw := make([][]byte, len(certs))
		for i, cert := range certs {
			if !bytes.Equal(cert.Raw, blocks[i]) {
				t.Fatalf("certificate %d is not the input's CERTIFICATE block %d", i+1, i+1)
			}
			raw[i] = cert.Raw
			if !DNSNamesEqual(cert, cert.DNSNames) {
				t.Fatalf("DNSNamesEqual(cert, cert.DNSNames) = false for %q", cert.DNSNames)
			}
		}
		if !bytes.Equal(leaf.Raw, certs[0].Raw) {
			t.Fatal("ParseLeaf did not return the chain's first certificate")
		}
		again, err := ParseChain(EncodeChain(raw))
		if err != nil {
			t.Fatalf("ParseChain(EncodeChain(chain)): %v", err)
		}
		for i := range again {
			if !bytes.Equal(again[i].Raw, raw[i]) {
				t.Fatalf("certificate %d changed in the EncodeChain round trip", i+1)
			}
		}
	})
}

// FuzzDecodePrivateKey checks the key parser on what a Secret's tls.key or bundle.pem may hold:
// a key it accepts re-encodes (PKCS #8) to the same key, PublicKeyAlgorithm names the algorithm
// and size of every ECDSA and RSA key it returns, and an error never repeats the key's bytes.
func FuzzDecodePrivateKey(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := DecodePrivateKey(data)
		if err != nil {
			if leak := secretLeak(err.Error(), data); leak != "" {
				t.Fatalf("DecodePrivateKey's error %q repeats private key bytes %q", err, leak)
			}
			return
		}
		switch key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey:
			algorithm, size, err := PublicKeyAlgorithm(key.Public())
			if err != nil || size <= 0 {
				t.Fatalf("PublicKeyAlgorithm(%T) = %q, %d, %v", key, algorithm, size, err)
			}
		}
		encoded, err := EncodePrivateKey(key)
		if err != nil {
			t.Fatalf("EncodePrivateKey(%T) of a decoded key: %v", key, err)
		}
		again, err := DecodePrivateKey(encoded)
		if err != nil {
			t.Fatalf("DecodePrivateKey(EncodePrivateKey(key)): %v", err)
		}
		if !again.(interface{ Equal(crypto.PrivateKey) bool }).Equal(key) {
			t.Fatalf("the %T key changed in the PKCS #8 round trip", key)
		}
	})
}

// secretLeakMin is the shortest run of private key material secretLeak reports: long enough that
// an error's own words never match by chance.
const secretLeakMin = 24

// secretLeak returns a run of at least secretLeakMin characters of message that repeats a private
// key block of input: its base64 body (as %s or %q of the PEM shows it), its DER bytes raw or in
// hex (as %x shows them); "" when there is none. Runs that also occur in input outside its
// private key blocks (a certificate, a block type) are public and not reported.
func secretLeak(message string, input []byte) string {
	var secrets []string
	public := string(input)
	for rest := input; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") || len(block.Bytes) == 0 {
			continue
		}
		body := base64.StdEncoding.EncodeToString(block.Bytes)
		secrets = append(secrets, body, string(block.Bytes), hex.EncodeToString(block.Bytes))
		public = strings.ReplaceAll(public, string(pem.EncodeToMemory(block)), "")
	}
	for i := 0; i+secretLeakMin <= len(message); i++ {
		run := message[i : i+secretLeakMin]
		for _, secret := range secrets {
			if strings.Contains(secret, run) && !strings.Contains(public, run) {
				return run
			}
		}
	}
	return ""
}
