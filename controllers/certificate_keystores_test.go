package controllers

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/pki"
)

// TestDecideOutputs: what the decision writes into a served Secret for spec.keystores and
// spec.additionalOutputFormats, and when it stalls instead.
func TestDecideOutputs(t *testing.T) {
	now := time.Now()
	served := validSecret(t, []string{"www.example.test"}, now)
	secretWith := func(extra map[string][]byte) *corev1.Secret {
		data := map[string][]byte{corev1.TLSCertKey: served.CertificatePEM, corev1.TLSPrivateKeyKey: served.PrivateKeyPEM,
			corev1.ServiceAccountRootCAKey: served.CertificatePEM}
		for k, v := range extra {
			data[k] = v
		}
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "7"}, Data: data}
	}
	_, leaf := secretOf(t, served)
	ref := &certpilotv1alpha1.SecretKeySelector{Name: "pw", Key: "password"}
	pkcs12Spec := &certpilotv1alpha1.CertificateKeystores{PKCS12: &certpilotv1alpha1.PKCS12Keystore{Create: true, PasswordSecretRef: ref, Profile: "Modern2023"}}
	jksSpec := &certpilotv1alpha1.CertificateKeystores{JKS: &certpilotv1alpha1.JKSKeystore{Create: true, PasswordSecretRef: ref, Alias: "certificate"}}
	certWith := func(keystores *certpilotv1alpha1.CertificateKeystores, formats ...string) *certpilotv1alpha1.Certificate {
		cert := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}}
		cert.Spec.Keystores = keystores
		for _, f := range formats {
			cert.Spec.AdditionalOutputFormats = append(cert.Spec.AdditionalOutputFormats, certpilotv1alpha1.CertificateAdditionalOutputFormat{Type: f})
		}
		return cert
	}
	password := func(value string) keystorePasswords {
		return keystorePasswords{pkcs12: keystorePassword{value: []byte(value)}, jks: keystorePassword{value: []byte(value)}}
	}
	missing := keystorePasswords{
		pkcs12: keystorePassword{err: &kube.SecretKeyError{Missing: true, Namespace: "shop", Name: "pw", Key: "password"}},
		jks:    keystorePassword{err: &kube.SecretKeyError{Missing: true, Namespace: "shop", Name: "pw", Key: "password"}},
	}
	// made is what the Secret holds when written for cert with passwords.
	made := func(cert *certpilotv1alpha1.Certificate, passwords keystorePasswords) map[string][]byte {
		out, err := makeOutputs(cert, secretWith(nil).Data, passwords)
		if err != nil || out.problem != nil {
			t.Fatalf("makeOutputs: %v %v", err, out.problem)
		}
		return out.data
	}
	idle := issuanceDecision{requeueAfter: time.Hour, current: currentCertificate{leaf: leaf}}
	backingOff := issuanceDecision{wait: wait(90*time.Second, "BackingOff", "retry later"), current: currentCertificate{leaf: leaf}}
	issuing := issuanceDecision{current: currentCertificate{leaf: leaf}}

	tests := map[string]struct {
		cert      *certpilotv1alpha1.Certificate
		secret    *corev1.Secret
		passwords keystorePasswords
		decision  issuanceDecision
		// wantSet and wantRemoved are the keys the patch sets and removes.
		wantSet, wantRemoved []string
		wantStall            string        // the stall's reason
		wantAfter            time.Duration // the stall's requeue
	}{
		"no outputs asked, none held": {cert: certWith(nil), secret: secretWith(nil), decision: idle},
		"pkcs12 added to the spec": {cert: certWith(pkcs12Spec), secret: secretWith(nil), passwords: password("one"), decision: idle,
			wantSet: []string{"keystore.p12", "truststore.p12"}},
		"pkcs12 up to date": {cert: certWith(pkcs12Spec), secret: secretWith(made(certWith(pkcs12Spec), password("one"))), passwords: password("one"), decision: idle},
		"pkcs12 password changed": {cert: certWith(pkcs12Spec), secret: secretWith(made(certWith(pkcs12Spec), password("one"))), passwords: password("two"), decision: idle,
			wantSet: []string{"keystore.p12", "truststore.p12"}},
		"pkcs12 profile changed": {cert: certWith(&certpilotv1alpha1.CertificateKeystores{PKCS12: &certpilotv1alpha1.PKCS12Keystore{Create: true, PasswordSecretRef: ref, Profile: "LegacyDES"}}),
			secret: secretWith(made(certWith(pkcs12Spec), password("one"))), passwords: password("one"), decision: idle,
			wantSet: []string{"keystore.p12", "truststore.p12"}},
		"pkcs12 removed from the spec, jks added": {cert: certWith(jksSpec), secret: secretWith(made(certWith(pkcs12Spec), password("one"))), passwords: password("one"), decision: idle,
			wantSet: []string{"keystore.jks", "truststore.jks"}, wantRemoved: []string{"keystore.p12", "truststore.p12"}},
		"create: false removes": {cert: certWith(&certpilotv1alpha1.CertificateKeystores{PKCS12: &certpilotv1alpha1.PKCS12Keystore{Create: false}}),
			secret: secretWith(made(certWith(pkcs12Spec), password("one"))), decision: idle, wantRemoved: []string{"keystore.p12", "truststore.p12"}},
		"DER and CombinedPEM": {cert: certWith(nil, "DER", "CombinedPEM"), secret: secretWith(nil), decision: idle, wantSet: []string{"key.der", "tls-combined.pem"}},
		"formats removed": {cert: certWith(nil), secret: secretWith(made(certWith(nil, "DER", "CombinedPEM"), keystorePasswords{})), decision: idle,
			wantRemoved: []string{"key.der", "tls-combined.pem"}},
		"password missing, no keystore yet": {cert: certWith(pkcs12Spec, "DER"), secret: secretWith(nil), passwords: missing, decision: idle,
			wantSet: []string{"key.der"}, wantStall: reasonKeystorePasswordMissing, wantAfter: stalledRecheck},
		"password missing, the keystore held is kept": {cert: certWith(jksSpec), secret: secretWith(made(certWith(jksSpec), password("one"))), passwords: missing, decision: idle,
			wantStall: reasonKeystorePasswordMissing, wantAfter: stalledRecheck},
		"password missing while backing off": {cert: certWith(pkcs12Spec), secret: secretWith(nil), passwords: missing, decision: backingOff,
			wantStall: reasonKeystorePasswordMissing, wantAfter: 90 * time.Second},
		"jks password not ASCII": {cert: certWith(jksSpec), secret: secretWith(nil), passwords: password("pässword"), decision: idle,
			wantStall: reasonKeystorePasswordInvalid, wantAfter: stalledRecheck},
		"passwordless pkcs12": {cert: certWith(&certpilotv1alpha1.CertificateKeystores{PKCS12: &certpilotv1alpha1.PKCS12Keystore{Create: true, Profile: "Passwordless"}}),
			secret: secretWith(nil), decision: idle, wantSet: []string{"keystore.p12", "truststore.p12"}},
		"issuing: the new certificate's write carries them": {cert: certWith(pkcs12Spec), secret: secretWith(nil), passwords: missing, decision: issuing},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, err := decideOutputs(tc.cert, tc.secret, tc.passwords, tc.decision)
			if err != nil {
				t.Fatal(err)
			}
			var set, removed []string
			for key, value := range d.patch {
				if value == nil {
					removed = append(removed, key)
				} else {
					set = append(set, key)
				}
			}
			slices.Sort(set)
			slices.Sort(removed)
			if !slices.Equal(set, tc.wantSet) || !slices.Equal(removed, tc.wantRemoved) {
				t.Errorf("patch sets %v and removes %v, want %v and %v", set, removed, tc.wantSet, tc.wantRemoved)
			}
			if got := d.written; len(got) != len(set)+len(removed) {
				t.Errorf("written %v, want the %d keys of the patch", got, len(set)+len(removed))
			}
			s, stalledNow := asStalled(d.stall)
			switch {
			case tc.wantStall == "" && d.stall != nil:
				t.Errorf("stalled: %v", d.stall)
			case tc.wantStall != "" && (!stalledNow || s.Reason != tc.wantStall || s.After != tc.wantAfter):
				t.Errorf("stall %+v, want reason %s after %s", d.stall, tc.wantStall, tc.wantAfter)
			case tc.wantStall != "" && (d.ready == nil || d.ready.Status != metav1.ConditionFalse || d.ready.Reason != tc.wantStall):
				t.Errorf("Ready %+v, want False with %s", d.ready, tc.wantStall)
			case tc.wantStall != "" && (strings.Contains(s.Message, "pässword") || !strings.Contains(s.Message, "shop/pw")):
				t.Errorf("the message should name the Secret and never the password: %s", s.Message)
			}
		})
	}
}

// TestKeystoresOnEnvtest: a Certificate with both keystores and both formats gets them with
// its first certificate, each read back by a real parser; a changed password, a removed
// keystore and an added one are written without a new certificate; a missing password Secret
// stalls the Certificate (Ready=False, a slow requeue, no password anywhere) and keeps the
// keystore it has, until the Secret is back.
func TestKeystoresOnEnvtest(t *testing.T) {
	h := newCertificateHarness(t, "keystores-")
	ctx := context.Background()
	passwordSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "keystore-password"},
		Data:       map[string][]byte{"password": []byte("first-password")},
	}
	create(t, passwordSecret)
	ref := &certpilotv1alpha1.SecretKeySelector{Name: passwordSecret.Name, Key: "password"}
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "java"},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{"java.harness.example"},
			SecretName: "java-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Name: h.issuer.Name},
			Keystores: &certpilotv1alpha1.CertificateKeystores{
				PKCS12: &certpilotv1alpha1.PKCS12Keystore{Create: true, PasswordSecretRef: ref},
				JKS:    &certpilotv1alpha1.JKSKeystore{Create: true, PasswordSecretRef: ref},
			},
			AdditionalOutputFormats: []certpilotv1alpha1.CertificateAdditionalOutputFormat{{Type: "DER"}, {Type: "CombinedPEM"}},
		},
	}
	create(t, cert)
	secret := h.issue(t, cert)
	serial := servedLeaf(t, secret)
	checkOutputs(t, secret, "first-password", "certificate")
	if orders := h.ca.Stats().Orders["java.harness.example"]; orders != 1 {
		t.Fatalf("%d orders", orders)
	}

	// A new password: the keystores are written again with it, nothing else.
	passwordSecret.Data["password"] = []byte("second-password")
	if err := testKube.Client.Update(ctx, passwordSecret); err != nil {
		t.Fatal(err)
	}
	secret = h.reconcileOutputs(t, cert, "the keystores under the new password", func(s *corev1.Secret) error {
		return openJKS(s.Data[certpilotv1alpha1.JKSKeystoreKey], "second-password")
	})
	checkOutputs(t, secret, "second-password", "certificate")

	// JKS and DER removed from the spec, PKCS#12 passwordless: their keys go.
	patch := client.MergeFrom(cert.DeepCopy())
	cert.Spec.Keystores = &certpilotv1alpha1.CertificateKeystores{PKCS12: &certpilotv1alpha1.PKCS12Keystore{Create: true, Profile: "Passwordless"}}
	cert.Spec.AdditionalOutputFormats = []certpilotv1alpha1.CertificateAdditionalOutputFormat{{Type: "CombinedPEM"}}
	if err := testKube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	secret = h.reconcileOutputs(t, cert, "the JKS and DER keys removed", func(s *corev1.Secret) error {
		if _, ok := s.Data[certpilotv1alpha1.JKSKeystoreKey]; ok {
			return errors.New("keystore.jks is still there")
		}
		return nil
	})
	for _, key := range []string{certpilotv1alpha1.JKSKeystoreKey, certpilotv1alpha1.JKSTruststoreKey, certpilotv1alpha1.DERKeyKey} {
		if _, ok := secret.Data[key]; ok {
			t.Errorf("%s is still in the Secret", key)
		}
	}
	if out, err := runOpenSSL(t, secret.Data[certpilotv1alpha1.PKCS12KeystoreKey], ""); err != nil || !strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("openssl cannot read the passwordless keystore: %v", err)
	}

	// JKS again, naming a password Secret that does not exist: Stalled, Ready=False, requeued
	// slowly, no password in the status; the Secret appears: the keystore is written.
	patch = client.MergeFrom(cert.DeepCopy())
	cert.Spec.Keystores.JKS = &certpilotv1alpha1.JKSKeystore{Create: true, Alias: "tomcat",
		PasswordSecretRef: &certpilotv1alpha1.SecretKeySelector{Name: "jks-password", Key: "password"}}
	if err := testKube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	h.reconcileUntil(t, cert, "Stalled for the missing password", func(error) error {
		return stalledCondition(cert, reasonKeystorePasswordMissing)
	})
	// The next reconcile that runs (one the cache is not ready for yet, after the status write
	// above, only asks to be repeated soon) waits slowly.
	var result reconcile.Result
	eventually(t, "a reconcile on a cache that has caught up", func() error {
		var err error
		result, err = h.reconciler.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(cert)})
		if err == nil && result.RequeueAfter == staleReadRetry {
			return errors.New("the cache is behind the last status write")
		}
		if err != nil || result.RequeueAfter < time.Minute {
			t.Errorf("a Certificate waiting for its password is requeued after %s (%v), want a slow recheck", result.RequeueAfter, err)
		}
		return nil
	})
	if err := testKube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
		t.Fatal(err)
	}
	ready := readyOf(cert)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != reasonKeystorePasswordMissing ||
		!strings.Contains(ready.Message, h.namespace+"/jks-password") {
		t.Errorf("Ready %+v, want False with the missing Secret named", ready)
	}
	if status := fmt.Sprintf("%+v", cert.Status); strings.Contains(status, "second-password") {
		t.Error("the status holds a password")
	}
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "jks-password"},
		Data: map[string][]byte{"password": []byte("jks-password")}})
	secret = h.reconcileOutputs(t, cert, "the JKS keystore once its password is there", func(s *corev1.Secret) error {
		return openJKS(s.Data[certpilotv1alpha1.JKSKeystoreKey], "jks-password")
	})
	h.reconcileUntil(t, cert, "Ready again", func(error) error { return readyCondition(cert) })
	if stalledCondition(cert, reasonKeystorePasswordMissing) == nil {
		t.Error("still Stalled")
	}
	checkJKS(t, secret, "jks-password", "tomcat")

	if err := testKube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
		t.Fatal(err)
	}
	if orders := h.ca.Stats().Orders["java.harness.example"]; cert.Status.SerialNumber != serial || orders != 1 {
		t.Errorf("a keystore change issued again: serial %s (was %s), %d orders", cert.Status.SerialNumber, serial, orders)
	}
}

// reconcileOutputs reconciles cert until its Secret passes check; it returns the Secret.
func (h *certificateHarness) reconcileOutputs(t *testing.T, cert *certpilotv1alpha1.Certificate, what string, check func(*corev1.Secret) error) *corev1.Secret {
	t.Helper()
	var secret *corev1.Secret
	h.reconcileUntil(t, cert, what, func(error) error {
		s := &corev1.Secret{}
		if err := testKube.Client.Get(context.Background(), client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, s); err != nil {
			return err
		}
		if err := check(s); err != nil {
			return err
		}
		secret = s
		return nil
	})
	return secret
}

func readyOf(cert *certpilotv1alpha1.Certificate) *metav1.Condition {
	for i := range cert.Status.Conditions {
		if cert.Status.Conditions[i].Type == certpilotv1alpha1.ConditionReady {
			return &cert.Status.Conditions[i]
		}
	}
	return nil
}

// checkOutputs reads every output of the Secret back with a real parser: openssl for PKCS#12,
// keystore-go for JKS, crypto/x509 for DER; each holds the key of tls.crt's leaf.
func checkOutputs(t *testing.T, secret *corev1.Secret, password, alias string) {
	t.Helper()
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	out, err := runOpenSSL(t, secret.Data[certpilotv1alpha1.PKCS12KeystoreKey], password)
	if err != nil {
		t.Fatalf("openssl pkcs12 refused keystore.p12: %v", err)
	}
	key, err := pki.DecodePrivateKey([]byte(out))
	if err != nil || !pki.KeyMatches(leaf, key) {
		t.Errorf("openssl's key from keystore.p12 is not the leaf's (%v)", err)
	}
	if certs, err := pki.ParseChain([]byte(out)); err != nil || !slices.ContainsFunc(certs, leaf.Equal) {
		t.Errorf("keystore.p12 lacks the leaf (%v)", err)
	}
	if out, err := runOpenSSL(t, secret.Data[certpilotv1alpha1.PKCS12TruststoreKey], password); err != nil || !strings.Contains(out, "CERTIFICATE") {
		t.Errorf("openssl cannot read truststore.p12: %v", err)
	}
	checkJKS(t, secret, password, alias)
	der, err := x509.ParsePKCS8PrivateKey(secret.Data[certpilotv1alpha1.DERKeyKey])
	if signer, ok := der.(crypto.Signer); err != nil || !ok || !pki.KeyMatches(leaf, signer) {
		t.Errorf("key.der is not the leaf's key (%v)", err)
	}
	if !bytes.Equal(secret.Data[certpilotv1alpha1.CombinedPEMKey], secret.Data[certpilotv1alpha1.BundleKey]) {
		t.Error("tls-combined.pem is not the key followed by the chain")
	}
}

// checkJKS opens keystore.jks and truststore.jks with keystore-go's reader.
func checkJKS(t *testing.T, secret *corev1.Secret, password, alias string) {
	t.Helper()
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
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
		t.Errorf("keystore.jks does not hold the leaf and its key (%v)", err)
	}
	if err := openJKS(secret.Data[certpilotv1alpha1.JKSTruststoreKey], password); err != nil {
		t.Errorf("truststore.jks: %v", err)
	}
}

// openJKS checks a Java KeyStore's integrity with password.
func openJKS(data []byte, password string) error {
	if len(data) == 0 {
		return errors.New("no keystore")
	}
	return keystore.New().Load(bytes.NewReader(data), []byte(password))
}

// runOpenSSL runs `openssl pkcs12 -nodes` on a PKCS#12 file (the password from the
// environment) and returns what it prints; the test is skipped without openssl.
func runOpenSSL(t *testing.T, data []byte, password string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed: make test-deps installs it")
	}
	file := filepath.Join(t.TempDir(), "store.p12")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "pkcs12", "-in", file, "-passin", "env:P12PASS", "-nodes")
	cmd.Env = append(os.Environ(), "P12PASS="+password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	return string(out), nil
}

// TestInjectionMountsOutputs: a mounted Secret carries the keystores and formats the Secret
// holds for the spec, after the four PEM files; a key the spec asks for that the Secret lacks
// (a password still missing) is not an item, so the pod can start.
func TestInjectionMountsOutputs(t *testing.T) {
	cert := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	cert.Spec.Keystores = &certpilotv1alpha1.CertificateKeystores{
		PKCS12: &certpilotv1alpha1.PKCS12Keystore{Create: true, Profile: "Passwordless"},
		JKS:    &certpilotv1alpha1.JKSKeystore{Create: true, PasswordSecretRef: &certpilotv1alpha1.SecretKeySelector{Name: "pw", Key: "p"}},
	}
	cert.Spec.AdditionalOutputFormats = []certpilotv1alpha1.CertificateAdditionalOutputFormat{{Type: "DER"}}
	if got, want := outputKeysOf(cert), []string{"keystore.p12", "truststore.p12", "keystore.jks", "truststore.jks", "key.der"}; !slices.Equal(got, want) {
		t.Fatalf("outputKeysOf = %v, want %v", got, want)
	}
	source := injectSource{certificate: "web", secretName: "web-tls", serial: "abc", outputKeys: []string{"keystore.p12", "key.der"}}
	plan := planInjection(source, certpilotv1alpha1.InjectedWorkload{Kind: "Deployment", Name: "web"},
		[]certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", MountPath: "/tls"}},
		&corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}, nil)
	if plan.template == nil || len(plan.template.Spec.Volumes) != 1 {
		t.Fatalf("no volume planned: %+v", plan)
	}
	var items []string
	for _, item := range plan.template.Spec.Volumes[0].Secret.Items {
		items = append(items, *item.Key)
	}
	if want := []string{"tls.crt", "tls.key", "ca.crt", "bundle.pem", "keystore.p12", "key.der"}; !slices.Equal(items, want) {
		t.Errorf("items %v, want %v", items, want)
	}
}

// TestKeystorePasswordMissingAtIssuance: a Certificate whose keystore password Secret does not
// exist yet gets its certificate anyway, without the keystore; it is never Ready on the way
// (the store itself reports the missing password) and ends Stalled; once the Secret exists the
// keystore is added, with no second order.
func TestKeystorePasswordMissingAtIssuance(t *testing.T) {
	h := newCertificateHarness(t, "keystore-missing-")
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "late"},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{"late.harness.example"},
			SecretName: "late-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Name: h.issuer.Name},
			Keystores: &certpilotv1alpha1.CertificateKeystores{JKS: &certpilotv1alpha1.JKSKeystore{Create: true, Alias: "certificate",
				PasswordSecretRef: &certpilotv1alpha1.SecretKeySelector{Name: "late-password", Key: "password"}}},
		},
	}
	create(t, cert)
	var everReady bool
	h.reconcileUntil(t, cert, "stored and Stalled for the missing password", func(error) error {
		if ready := readyOf(cert); ready != nil && ready.Status == metav1.ConditionTrue {
			everReady = true
		}
		if cert.Status.SerialNumber == "" {
			return errors.New("no certificate stored yet")
		}
		return stalledCondition(cert, reasonKeystorePasswordMissing)
	})
	if everReady {
		t.Error("the Certificate was Ready without the keystore its spec asks for")
	}
	secret := getSecret(t, h.namespace, "late-tls")
	servedLeaf(t, secret)
	if _, ok := secret.Data[certpilotv1alpha1.JKSKeystoreKey]; ok {
		t.Error("a keystore was written without its password")
	}
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "late-password"},
		Data: map[string][]byte{"password": []byte("late-password")}})
	secret = h.reconcileOutputs(t, cert, "the keystore once its password exists", func(s *corev1.Secret) error {
		return openJKS(s.Data[certpilotv1alpha1.JKSKeystoreKey], "late-password")
	})
	checkJKS(t, secret, "late-password", "certificate")
	h.reconcileUntil(t, cert, "Ready", func(error) error { return readyCondition(cert) })
	if orders := h.ca.Stats().Orders["late.harness.example"]; orders != 1 {
		t.Errorf("%d orders, want 1", orders)
	}
}
