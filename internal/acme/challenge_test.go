package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
)

func TestDNS01RecordName(t *testing.T) {
	tests := map[string]string{
		"example.test":       "_acme-challenge.example.test.",
		"*.example.test":     "_acme-challenge.example.test.",
		"www.example.test.":  "_acme-challenge.www.example.test.",
		"*.a.b.example.test": "_acme-challenge.a.b.example.test.",
	}
	for domain, want := range tests {
		if got := DNS01RecordName(domain); got != want {
			t.Errorf("DNS01RecordName(%q) = %q, want %q", domain, got, want)
		}
	}
}

func TestSignJWS(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed25519Key, _ := ed25519.GenerateKey(rand.Reader)
	tests := map[string]struct {
		key     crypto.Signer
		alg     string
		wantErr bool
	}{
		"ES256":           {key: p256, alg: "ES256"},
		"ES384":           {key: p384, alg: "ES384"},
		"ES512":           {key: p521, alg: "ES512"},
		"RS256":           {key: rsaKey, alg: "RS256"},
		"Ed25519 refused": {key: ed25519Key, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			body, err := signJWS(tc.key, "https://ca.test/acct/1", "nonce-1", "https://ca.test/finalize/1", []byte(`{"csr":"x"}`))
			if tc.wantErr {
				if err == nil || !IsPermanent(err) {
					t.Fatalf("signJWS = %v, want a permanent error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var jws struct{ Protected, Payload, Signature string }
			if err := json.Unmarshal(body, &jws); err != nil {
				t.Fatal(err)
			}
			decode := base64.RawURLEncoding.DecodeString
			protectedJSON, _ := decode(jws.Protected)
			var protected map[string]string
			if err := json.Unmarshal(protectedJSON, &protected); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"alg": tc.alg, "kid": "https://ca.test/acct/1", "nonce": "nonce-1", "url": "https://ca.test/finalize/1"}
			for k, v := range want {
				if protected[k] != v {
					t.Errorf("protected[%s] = %q, want %q", k, protected[k], v)
				}
			}
			if _, ok := protected["jwk"]; ok {
				t.Error("kid-form JWS carries a jwk")
			}
			signature, _ := decode(jws.Signature)
			input := []byte(jws.Protected + "." + jws.Payload)
			switch key := tc.key.(type) {
			case *ecdsa.PrivateKey:
				size := (key.Curve.Params().BitSize + 7) / 8
				if len(signature) != 2*size {
					t.Fatalf("signature is %d bytes, want %d", len(signature), 2*size)
				}
				r, s := new(big.Int).SetBytes(signature[:size]), new(big.Int).SetBytes(signature[size:])
				var digest []byte
				switch {
				case strings.HasSuffix(tc.alg, "384"):
					sum := sha512.Sum384(input)
					digest = sum[:]
				case strings.HasSuffix(tc.alg, "512"):
					sum := sha512.Sum512(input)
					digest = sum[:]
				default:
					sum := sha256.Sum256(input)
					digest = sum[:]
				}
				if !ecdsa.Verify(&key.PublicKey, digest, r, s) {
					t.Error("ECDSA signature does not verify")
				}
			case *rsa.PrivateKey:
				sum := sha256.Sum256(input)
				if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, sum[:], signature); err != nil {
					t.Errorf("RSA signature does not verify: %v", err)
				}
			}
		})
	}
}
