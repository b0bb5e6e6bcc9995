package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestGenerateKey(t *testing.T) {
	tests := map[string]struct {
		algorithm string
		size      int
		wantErr   bool
	}{
		"ECDSA P-256":  {algorithm: ECDSA, size: 256},
		"ECDSA P-384":  {algorithm: ECDSA, size: 384},
		"RSA 2048":     {algorithm: RSA, size: 2048},
		"RSA 3072":     {algorithm: RSA, size: 3072},
		"ECDSA P-521":  {algorithm: ECDSA, size: 521, wantErr: true},
		"RSA 1024":     {algorithm: RSA, size: 1024, wantErr: true},
		"ECDSA size 0": {algorithm: ECDSA, size: 0, wantErr: true},
		"lower case":   {algorithm: "ecdsa", size: 256, wantErr: true},
		"Ed25519":      {algorithm: "Ed25519", size: 256, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			key, err := GenerateKey(tc.algorithm, tc.size)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("GenerateKey(%q, %d) succeeded, want an error", tc.algorithm, tc.size)
				}
				return
			}
			if err != nil {
				t.Fatalf("GenerateKey(%q, %d): %v", tc.algorithm, tc.size, err)
			}
			algorithm, size, err := PublicKeyAlgorithm(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if algorithm != tc.algorithm || size != tc.size {
				t.Errorf("PublicKeyAlgorithm = %s %d, want %s %d", algorithm, size, tc.algorithm, tc.size)
			}
		})
	}
}

func TestPrivateKeyPEM(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8EC, err := EncodePrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8RSA, err := EncodePrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}})

	tests := map[string]struct {
		pem     []byte
		want    crypto.Signer
		wantErr bool
	}{
		"PKCS#8 ECDSA":   {pem: pkcs8EC, want: ecKey},
		"PKCS#8 RSA":     {pem: pkcs8RSA, want: rsaKey},
		"SEC 1 ECDSA":    {pem: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), want: ecKey},
		"PKCS#1 RSA":     {pem: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), want: rsaKey},
		"after params":   {pem: append(ecParams, pkcs8EC...), want: ecKey},
		"empty":          {pem: nil, wantErr: true},
		"not PEM":        {pem: []byte("hello"), wantErr: true},
		"garbage body":   {pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), wantErr: true},
		"wrong encoding": {pem: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: sec1}), wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := DecodePrivateKey(tc.pem)
			if tc.wantErr {
				if err == nil {
					t.Fatal("DecodePrivateKey succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodePrivateKey: %v", err)
			}
			if !got.(interface{ Equal(crypto.PrivateKey) bool }).Equal(tc.want) {
				t.Error("decoded key differs from the encoded one")
			}
		})
	}
	if !bytes.HasPrefix(pkcs8EC, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("EncodePrivateKey wrote %q, want a PKCS#8 PRIVATE KEY block", strings.SplitN(string(pkcs8EC), "\n", 2)[0])
	}
}

func TestCreateCSR(t *testing.T) {
	key, err := GenerateKey(ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		names   []string
		wantErr bool
	}{
		"one name":   {names: []string{"example.test"}},
		"several":    {names: []string{"example.test", "www.example.test", "*.example.test"}},
		"no names":   {names: nil, wantErr: true},
		"empty list": {names: []string{}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			der, err := CreateCSR(key, tc.names)
			if tc.wantErr {
				if err == nil {
					t.Fatal("CreateCSR succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("CSR signature: %v", err)
			}
			if csr.Subject.CommonName != tc.names[0] {
				t.Errorf("CommonName = %q, want %q", csr.Subject.CommonName, tc.names[0])
			}
			if strings.Join(csr.DNSNames, ",") != strings.Join(tc.names, ",") {
				t.Errorf("DNSNames = %v, want %v", csr.DNSNames, tc.names)
			}
		})
	}
}

// testChain returns a leaf for names signed by a throwaway CA, and the leaf's key.
func testChain(t testing.TB, names ...string) (leafDER, caDER []byte, leafKey crypto.Signer) {
	t.Helper()
	caKey, err := GenerateKey(ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err = x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err = GenerateKey(RSA, 2048)
	if err != nil {
		t.Fatal(err)
	}
	leafTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	leafDER, err = x509.CreateCertificate(rand.Reader, leafTemplate, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return leafDER, caDER, leafKey
}

func TestChainAndBundle(t *testing.T) {
	leafDER, caDER, leafKey := testChain(t, "example.test", "www.example.test")
	chainPEM := EncodeChain([][]byte{leafDER, caDER})

	certs, err := ParseChain(chainPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !bytes.Equal(certs[0].Raw, leafDER) || !bytes.Equal(certs[1].Raw, caDER) {
		t.Fatalf("ParseChain returned %d certificates, not leaf then CA", len(certs))
	}
	leaf, err := ParseLeaf(chainPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leaf.Raw, leafDER) {
		t.Error("ParseLeaf did not return the first certificate")
	}

	keyPEM, err := EncodePrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	bundle := Bundle(bytes.TrimSuffix(keyPEM, []byte("\n")), chainPEM)
	var types []string
	for rest := bundle; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		types = append(types, block.Type)
	}
	if got := strings.Join(types, ","); got != "PRIVATE KEY,CERTIFICATE,CERTIFICATE" {
		t.Errorf("Bundle blocks = %s, want key, leaf, CA", got)
	}
	bundleLeaf, err := ParseLeaf(bundle)
	if err != nil || !bytes.Equal(bundleLeaf.Raw, leafDER) {
		t.Errorf("ParseLeaf(bundle) did not skip the key block: %v", err)
	}
	bundleKey, err := DecodePrivateKey(bundle)
	if err != nil || !KeyMatches(bundleLeaf, bundleKey) {
		t.Errorf("DecodePrivateKey(bundle) = %v, want the leaf's key", err)
	}

	for name, input := range map[string][]byte{
		"empty":    nil,
		"key only": keyPEM,
		"garbage":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
	} {
		if _, err := ParseLeaf(input); err == nil {
			t.Errorf("ParseLeaf(%s) succeeded, want an error", name)
		}
	}
}

func TestKeyMatches(t *testing.T) {
	leafDER, _, leafKey := testChain(t, "example.test")
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	otherRSA, err := GenerateKey(RSA, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherEC, err := GenerateKey(ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		cert *x509.Certificate
		key  crypto.Signer
		want bool
	}{
		"own key":         {cert: leaf, key: leafKey, want: true},
		"other RSA key":   {cert: leaf, key: otherRSA},
		"other algorithm": {cert: leaf, key: otherEC},
		"nil certificate": {cert: nil, key: leafKey},
		"nil key":         {cert: leaf, key: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := KeyMatches(tc.cert, tc.key); got != tc.want {
				t.Errorf("KeyMatches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDNSNamesEqual(t *testing.T) {
	leafDER, _, _ := testChain(t, "example.test", "www.example.test")
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		names []string
		want  bool
	}{
		"same order":      {names: []string{"example.test", "www.example.test"}, want: true},
		"other order":     {names: []string{"www.example.test", "example.test"}, want: true},
		"case, dot, dupe": {names: []string{"Example.TEST.", "www.example.test", "example.test"}, want: true},
		"missing name":    {names: []string{"example.test"}},
		"extra name":      {names: []string{"example.test", "www.example.test", "api.example.test"}},
		"none":            {names: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := DNSNamesEqual(leaf, tc.names); got != tc.want {
				t.Errorf("DNSNamesEqual(%v) = %v, want %v", tc.names, got, tc.want)
			}
		})
	}
	if DNSNamesEqual(nil, []string{"example.test"}) {
		t.Error("DNSNamesEqual(nil) = true")
	}
}
