package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestKeystores: a Certificate with PKCS#12 and JKS keystores and both additional formats,
// issued by Pebble through the edge, has them in its Secret from the first write, each read
// back by a real parser (openssl, keystore-go, crypto/x509) and holding the served leaf and its
// key; after the renewal they hold the new certificate.
func TestKeystores(t *testing.T) {
	testenv.SkipIfShort(t)
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed: make test-deps installs it")
	}
	ctx := context.Background()
	// 40 s certificates renew at half their lifetime.
	s := startStack(t, "e2e-keystores", 40*time.Second)
	password := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "keystore-password", Namespace: s.Namespace},
		Data:       map[string][]byte{"password": []byte("e2e-keystore-password")},
	}
	if err := kube.Client.Create(ctx, password); err != nil {
		t.Fatal(err)
	}
	ref := &certpilotv1alpha1.SecretKeySelector{Name: password.Name, Key: "password"}
	cert := s.TLSALPN01Certificate("java", "java.keystores.test")
	cert.Spec.Keystores = &certpilotv1alpha1.CertificateKeystores{
		PKCS12: &certpilotv1alpha1.PKCS12Keystore{Create: true, PasswordSecretRef: ref},
		JKS:    &certpilotv1alpha1.JKSKeystore{Create: true, PasswordSecretRef: ref, Alias: "tomcat"},
	}
	cert.Spec.AdditionalOutputFormats = []certpilotv1alpha1.CertificateAdditionalOutputFormat{{Type: "DER"}, {Type: "CombinedPEM"}}
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	first := cert.Status.SerialNumber
	leaf, secret := verifySecret(t, s.Pebble, cert)
	checkKeystores(t, secret, leaf, "e2e-keystore-password", "tomcat")

	waitReady(t, cert, 2*time.Minute, first)
	renewed, secret := verifySecret(t, s.Pebble, cert)
	if renewed.Equal(leaf) {
		t.Fatal("the Secret still holds the first certificate")
	}
	checkKeystores(t, secret, renewed, "e2e-keystore-password", "tomcat")
}

// checkKeystores reads each output of the Secret back and checks it holds leaf and its key.
func checkKeystores(t *testing.T, secret *corev1.Secret, leaf *x509.Certificate, password, alias string) {
	t.Helper()
	for _, file := range []string{certpilotv1alpha1.PKCS12KeystoreKey, certpilotv1alpha1.PKCS12TruststoreKey} {
		out := opensslPKCS12(t, secret.Data[file], password)
		certs, err := pki.ParseChain(out)
		if err != nil {
			t.Fatalf("%s as openssl reads it: %v", file, err)
		}
		if file == certpilotv1alpha1.PKCS12TruststoreKey {
			ca, err := pki.ParseChain(secret.Data[corev1.ServiceAccountRootCAKey])
			if err != nil || len(certs) != len(ca) || !certs[0].Equal(ca[0]) {
				t.Errorf("truststore.p12 holds %d certificates, want those of ca.crt (%v)", len(certs), err)
			}
			continue
		}
		key, err := pki.DecodePrivateKey(out)
		if err != nil || !pki.KeyMatches(leaf, key) || !slices.ContainsFunc(certs, leaf.Equal) {
			t.Errorf("keystore.p12 as openssl reads it does not hold the served leaf and its key (%v)", err)
		}
	}

	ks := keystore.New()
	if err := ks.Load(bytes.NewReader(secret.Data[certpilotv1alpha1.JKSKeystoreKey]), []byte(password)); err != nil {
		t.Fatalf("keystore.jks: %v", err)
	}
	entry, err := ks.GetPrivateKeyEntry(alias, []byte(password))
	if err != nil {
		t.Fatalf("keystore.jks entry %q: %v", alias, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(entry.PrivateKey)
	if signer, ok := key.(crypto.Signer); err != nil || !ok || !pki.KeyMatches(leaf, signer) || !bytes.Equal(entry.CertificateChain[0].Content, leaf.Raw) {
		t.Errorf("keystore.jks does not hold the served leaf and its key (%v)", err)
	}
	trust := keystore.New()
	if err := trust.Load(bytes.NewReader(secret.Data[certpilotv1alpha1.JKSTruststoreKey]), []byte(password)); err != nil || !trust.IsTrustedCertificateEntry("ca") {
		t.Errorf("truststore.jks: %v, aliases %v", err, trust.Aliases())
	}

	der, err := x509.ParsePKCS8PrivateKey(secret.Data[certpilotv1alpha1.DERKeyKey])
	if signer, ok := der.(crypto.Signer); err != nil || !ok || !pki.KeyMatches(leaf, signer) {
		t.Errorf("key.der is not the served leaf's key (%v)", err)
	}
	combined := secret.Data[certpilotv1alpha1.CombinedPEMKey]
	if key, err := pki.DecodePrivateKey(combined); err != nil || !pki.KeyMatches(leaf, key) {
		t.Errorf("tls-combined.pem lacks the key (%v)", err)
	}
	if chain, err := pki.ParseChain(combined); err != nil || !chain[0].Equal(leaf) {
		t.Errorf("tls-combined.pem lacks the leaf (%v)", err)
	}
}

// opensslPKCS12 prints a PKCS#12 file's key and certificates as PEM with `openssl pkcs12`.
func opensslPKCS12(t *testing.T, data []byte, password string) []byte {
	t.Helper()
	file := filepath.Join(t.TempDir(), "store.p12")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("openssl", "pkcs12", "-in", file, "-passin", "env:P12PASS", "-nodes")
	cmd.Env = append(os.Environ(), "P12PASS="+password)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl pkcs12: %v", fmt.Errorf("%w: %s", err, stderrOf(err)))
	}
	return out
}

func stderrOf(err error) string {
	if exit, ok := err.(*exec.ExitError); ok {
		return string(exit.Stderr)
	}
	return ""
}
