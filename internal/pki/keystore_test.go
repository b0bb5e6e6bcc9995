package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// keystoreInput is a key, a chain (leaf and CA) and a ca.crt (the CA), as a certificate
// Secret holds them.
func keystoreInput(t testing.TB) (KeystoreInput, *x509.Certificate, *x509.Certificate) {
	t.Helper()
	leafDER, caDER, key := testChain(t, "keystore.example.com")
	keyPEM, err := EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	ca, _ := x509.ParseCertificate(caDER)
	return KeystoreInput{KeyPEM: keyPEM, ChainPEM: EncodeChain([][]byte{leafDER, caDER}), CAPEM: EncodeChain([][]byte{caDER})}, leaf, ca
}

// openssl runs `openssl pkcs12` on data with the password (from the environment, never the
// command line) and returns the PEM blocks it prints; the test is skipped without openssl.
func openssl(t *testing.T, data []byte, password string, args ...string) ([]*pem.Block, error) {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed, so the PKCS#12 files were not read back by it: make test-deps installs it")
	}
	file := filepath.Join(t.TempDir(), "store.p12")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, append([]string{"pkcs12", "-in", file, "-passin", "env:P12PASS", "-nodes"}, args...)...)
	cmd.Env = append(os.Environ(), "P12PASS="+password)
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil, errors.New(strings.TrimSpace(string(exit.Stderr)))
		}
		return nil, err
	}
	var blocks []*pem.Block
	for {
		var block *pem.Block
		block, out = pem.Decode(out)
		if block == nil {
			return blocks, nil
		}
		blocks = append(blocks, block)
	}
}

// certificatesOf returns the certificates among blocks.
func certificatesOf(t *testing.T, blocks []*pem.Block) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for _, block := range blocks {
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			certs = append(certs, cert)
		}
	}
	return certs
}

// TestPKCS12ReadByOpenSSL: each profile's keystore and trust store, read back by openssl
// pkcs12, hold the key of the leaf, the leaf and the CA; a wrong password is refused.
func TestPKCS12ReadByOpenSSL(t *testing.T) {
	in, leaf, ca := keystoreInput(t)
	for _, tc := range []struct {
		profile, password string
		opensslArgs       []string
	}{
		{profile: PKCS12Modern2023, password: "s3cret pässword"},
		{profile: PKCS12LegacyDES, password: "s3cret"},
		// OpenSSL 3 reads RC2 only with its legacy provider.
		{profile: PKCS12LegacyRC2, password: "s3cret", opensslArgs: []string{"-legacy"}},
		{profile: PKCS12Passwordless},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			store, err := EncodePKCS12(in, tc.profile, []byte(tc.password))
			if err != nil {
				t.Fatal(err)
			}
			blocks, err := openssl(t, store, tc.password, tc.opensslArgs...)
			if err != nil {
				t.Fatalf("openssl pkcs12 refused the keystore: %v", err)
			}
			var keys int
			for _, block := range blocks {
				if block.Type != "PRIVATE KEY" {
					continue
				}
				keys++
				key, err := DecodePrivateKey(pem.EncodeToMemory(block))
				if err != nil || !KeyMatches(leaf, key) {
					t.Errorf("openssl's private key is not the leaf's (%v)", err)
				}
			}
			certs := certificatesOf(t, blocks)
			if keys != 1 || len(certs) != 2 || !certs[0].Equal(leaf) && !certs[1].Equal(leaf) || !containsCertificate(certs, ca) {
				t.Errorf("openssl read %d keys and %d certificates, want the key, the leaf and the CA once each", keys, len(certs))
			}

			trust, err := EncodePKCS12TrustStore(in, tc.profile, []byte(tc.password))
			if err != nil {
				t.Fatal(err)
			}
			blocks, err = openssl(t, trust, tc.password, tc.opensslArgs...)
			if err != nil {
				t.Fatalf("openssl pkcs12 refused the trust store: %v", err)
			}
			if certs := certificatesOf(t, blocks); len(certs) != 1 || !certs[0].Equal(ca) || len(blocks) != 1 {
				t.Errorf("the trust store holds %d blocks, want the CA alone", len(blocks))
			}
			if trusted, err := pkcs12.DecodeTrustStore(trust, tc.password); err != nil || len(trusted) != 1 || !trusted[0].Equal(ca) {
				t.Errorf("go-pkcs12 reads the trust store as %d certificates (%v), want the CA", len(trusted), err)
			}

			if tc.password != "" {
				if _, err := openssl(t, store, "wrong", tc.opensslArgs...); err == nil {
					t.Error("openssl opened the keystore with a wrong password")
				}
			}
		})
	}
}

// TestKeystoresAreDeterministic: the same input encodes to the same bytes (so a Secret's
// keystore is checked by encoding again), and any change of password, profile or alias to
// others.
func TestKeystoresAreDeterministic(t *testing.T) {
	in, _, _ := keystoreInput(t)
	encode := map[string]func(password string) ([]byte, error){
		"pkcs12":            func(p string) ([]byte, error) { return EncodePKCS12(in, PKCS12Modern2023, []byte(p)) },
		"pkcs12 LegacyDES":  func(p string) ([]byte, error) { return EncodePKCS12(in, PKCS12LegacyDES, []byte(p)) },
		"pkcs12 truststore": func(p string) ([]byte, error) { return EncodePKCS12TrustStore(in, PKCS12Modern2023, []byte(p)) },
		"jks":               func(p string) ([]byte, error) { return EncodeJKS(in, "certificate", []byte(p)) },
		"jks other alias":   func(p string) ([]byte, error) { return EncodeJKS(in, "tomcat", []byte(p)) },
		"jks truststore":    func(p string) ([]byte, error) { return EncodeJKSTrustStore(in, []byte(p)) },
	}
	seen := map[string]string{}
	for name, f := range encode {
		first, err := f("one")
		if err != nil {
			t.Fatal(err)
		}
		again, _ := f("one")
		other, _ := f("two")
		if !bytes.Equal(first, again) {
			t.Errorf("%s: two encodings of the same input differ", name)
		}
		if bytes.Equal(first, other) {
			t.Errorf("%s: another password gives the same bytes", name)
		}
		if previous, ok := seen[string(first)]; ok {
			t.Errorf("%s and %s encode to the same bytes", name, previous)
		}
		seen[string(first)] = name
	}
}

// TestJKSReadByKeystoreGo: keystore-go's reader opens the keystore with the password, finds the
// key under the alias with the leaf's chain, and the trust store's entries "ca", "ca-1", ...; a
// wrong password fails the store's integrity check.
func TestJKSReadByKeystoreGo(t *testing.T) {
	in, leaf, ca := keystoreInput(t)
	password := []byte("changeit")
	data, err := EncodeJKS(in, "tomcat", password)
	if err != nil {
		t.Fatal(err)
	}
	ks := keystore.New()
	if err := ks.Load(bytes.NewReader(data), password); err != nil {
		t.Fatal(err)
	}
	if aliases := ks.Aliases(); len(aliases) != 1 || aliases[0] != "tomcat" {
		t.Fatalf("aliases %v, want [tomcat]", aliases)
	}
	entry, err := ks.GetPrivateKeyEntry("tomcat", password)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(entry.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if signer, ok := key.(crypto.Signer); !ok || !KeyMatches(leaf, signer) {
		t.Error("the JKS private key is not the leaf's")
	}
	if len(entry.CertificateChain) != 2 || !bytes.Equal(entry.CertificateChain[0].Content, leaf.Raw) || !bytes.Equal(entry.CertificateChain[1].Content, ca.Raw) {
		t.Errorf("the JKS chain has %d certificates, want the leaf and the CA", len(entry.CertificateChain))
	}
	if err := keystore.New().Load(bytes.NewReader(data), []byte("wrong")); err == nil {
		t.Error("keystore-go opened the keystore with a wrong password")
	}

	trust, err := EncodeJKSTrustStore(in, password)
	if err != nil {
		t.Fatal(err)
	}
	ts := keystore.New()
	if err := ts.Load(bytes.NewReader(trust), password); err != nil {
		t.Fatal(err)
	}
	entryCA, err := ts.GetTrustedCertificateEntry("ca")
	if err != nil || !bytes.Equal(entryCA.Certificate.Content, ca.Raw) || len(ts.Aliases()) != 1 {
		t.Errorf("trust store aliases %v, entry ca: %v", ts.Aliases(), err)
	}
}

// TestKeystoresReadByKeytool: Java's own keytool lists the JKS and PKCS#12 keystores with the
// password: one PrivateKeyEntry with a chain of two, and the trusted CA. Skipped without a JDK.
func TestKeystoresReadByKeytool(t *testing.T) {
	keytool, err := exec.LookPath("keytool")
	if err != nil {
		t.Skip("keytool (a JDK) is not installed, so Java itself did not read the keystores")
	}
	in, _, _ := keystoreInput(t)
	password := "changeit"
	jks, err := EncodeJKS(in, "certificate", []byte(password))
	if err != nil {
		t.Fatal(err)
	}
	p12, err := EncodePKCS12(in, PKCS12Modern2023, []byte(password))
	if err != nil {
		t.Fatal(err)
	}
	trust, err := EncodeJKSTrustStore(in, []byte(password))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, storeType string
		data            []byte
		want            []string
	}{
		{"keystore.jks", "JKS", jks, []string{"Alias name: certificate", "PrivateKeyEntry", "Certificate chain length: 2"}},
		{"keystore.p12", "PKCS12", p12, []string{"PrivateKeyEntry", "Certificate chain length: 2"}},
		{"truststore.jks", "JKS", trust, []string{"Alias name: ca\n", "trustedCertEntry"}},
	} {
		file := filepath.Join(dir, tc.name)
		if err := os.WriteFile(file, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(keytool, "-list", "-v", "-keystore", file, "-storetype", tc.storeType, "-storepass:env", "STOREPASS")
		cmd.Env = append(os.Environ(), "STOREPASS="+password)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("keytool -list %s: %v\n%s", tc.name, err, out)
			continue
		}
		for _, want := range tc.want {
			if !strings.Contains(string(out), want) {
				t.Errorf("keytool -list %s lacks %q:\n%s", tc.name, want, out)
			}
		}
	}
}

// TestKeyDER: key.der is the private key as PKCS #8 DER, the key of the leaf.
func TestKeyDER(t *testing.T) {
	in, leaf, _ := keystoreInput(t)
	der, err := EncodeKeyDER(in.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	if signer, ok := key.(crypto.Signer); !ok || !KeyMatches(leaf, signer) {
		t.Error("key.der is not the leaf's key")
	}
}

// TestKeystorePasswords: passwords a format cannot take are refused with a PasswordError that
// does not repeat them.
func TestKeystorePasswords(t *testing.T) {
	in, _, _ := keystoreInput(t)
	tests := map[string]func() error{
		"pkcs12 empty":                 func() error { _, err := EncodePKCS12(in, PKCS12Modern2023, nil); return err },
		"pkcs12 emoji":                 func() error { _, err := EncodePKCS12(in, PKCS12Modern2023, []byte("pw-\U0001F511")); return err },
		"pkcs12 not UTF-8":             func() error { _, err := EncodePKCS12(in, PKCS12LegacyDES, []byte{'p', 0xff}); return err },
		"pkcs12 passwordless with one": func() error { _, err := EncodePKCS12(in, PKCS12Passwordless, []byte("pw-secret")); return err },
		"jks empty":                    func() error { _, err := EncodeJKS(in, "certificate", nil); return err },
		"jks not ASCII":                func() error { _, err := EncodeJKS(in, "certificate", []byte("pässword")); return err },
		"jks truststore not ASCII":     func() error { _, err := EncodeJKSTrustStore(in, []byte("pässword")); return err },
		"pkcs12 truststore passwordless": func() error {
			_, err := EncodePKCS12TrustStore(in, PKCS12Passwordless, []byte("pw-secret"))
			return err
		},
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			err := f()
			var passwordErr *PasswordError
			if !errors.As(err, &passwordErr) {
				t.Fatalf("error %v, want a PasswordError", err)
			}
			if strings.Contains(err.Error(), "pässword") || strings.Contains(err.Error(), "pw-") {
				t.Errorf("the error repeats the password: %v", err)
			}
		})
	}
}

// TestKeystoreInputMismatch: a key that is not the leaf's is refused, not packed.
func TestKeystoreInputMismatch(t *testing.T) {
	in, _, _ := keystoreInput(t)
	other, _, _ := keystoreInput(t)
	in.KeyPEM = other.KeyPEM
	if _, err := EncodePKCS12(in, PKCS12Modern2023, []byte("pw")); err == nil {
		t.Error("a keystore was made of a key and a certificate that do not belong together")
	}
}

// BenchmarkKeystores is what checking a Secret's keystores costs: each check encodes them again
// (a PKCS#12 keystore and trust store in the Modern2023 profile, a JKS keystore and trust store).
func BenchmarkKeystores(b *testing.B) {
	in, _, _ := keystoreInput(b)
	password := []byte("changeit")
	for b.Loop() {
		for _, encode := range []func() ([]byte, error){
			func() ([]byte, error) { return EncodePKCS12(in, PKCS12Modern2023, password) },
			func() ([]byte, error) { return EncodePKCS12TrustStore(in, PKCS12Modern2023, password) },
			func() ([]byte, error) { return EncodeJKS(in, "certificate", password) },
			func() ([]byte, error) { return EncodeJKSTrustStore(in, password) },
		} {
			if _, err := encode(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
