package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
)

// opaqueSigner is a crypto.Signer whose concrete type is not a key type x/crypto knows, as an
// HSM or KMS key is; only its public key decides whether it can sign ACME requests.
type opaqueSigner struct{ crypto.Signer }

func TestCheckAccountKey(t *testing.T) {
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, ed25519Key, _ := ed25519.GenerateKey(rand.Reader)
	tests := map[string]struct {
		key crypto.Signer
		// wantErr are substrings of the error; none means the key is accepted.
		wantErr []string
	}{
		"RSA":                          {key: rsaKey},
		"ECDSA P-256":                  {key: p256},
		"ECDSA P-384":                  {key: p384},
		"ECDSA P-521":                  {key: p521},
		"opaque signer of a P-256 key": {key: opaqueSigner{p256}},
		"ECDSA P-224":                  {key: p224, wantErr: []string{"curve P-224", SupportedAccountKeys}},
		"Ed25519":                      {key: ed25519Key, wantErr: []string{"ed25519.PublicKey", SupportedAccountKeys}},
		"missing":                      {key: nil, wantErr: []string{"missing"}},
		"RSA of 1024 bits":             {key: rsa1024, wantErr: []string{"RSA of 1024 bits", "at least 2048"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := CheckAccountKey(tc.key)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("CheckAccountKey = %v, want nil", err)
				}
				return
			}
			if err == nil || !IsPermanent(err) {
				t.Fatalf("CheckAccountKey = %v, want a permanent error", err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("CheckAccountKey error %q does not contain %q", err, want)
				}
			}
		})
	}
}
