package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/pki"
)

// spec.keystores and spec.additionalOutputFormats: the certificate Secret's other formats
// (keystore.p12, truststore.p12, keystore.jks, truststore.jks, key.der, tls-combined.pem).
//
// They are made from the Secret's own tls.key, tls.crt and ca.crt, so they never need a new
// certificate: a new certificate's write carries them (addOutputs), and when nothing is to be
// issued the decision compares them with what the spec and the passwords make now and patches
// the difference (decideOutputs): a keystore added to the spec, a changed password, profile or
// alias, a format removed from the spec (its keys removed). The encoders are deterministic
// (internal/pki), so "what the Secret holds" and "what it should hold" compare as bytes and an
// idle Certificate writes nothing.
//
// A password that cannot be read (its Secret or key is missing) or used never holds back a
// certificate: the keystore it protects is left as the Secret has it (none, or the one made
// for the previous certificate), and the Certificate is Ready=False and Stalled with a reason
// that names the Secret and key, never the value. certpilot does not watch the password
// Secrets (it caches only its own), so a fixed password is used at the next reconcile: within
// the 10-minute recheck of a stalled Certificate, or at once when the Certificate changes.

// Reasons of a Certificate whose keystore cannot be written.
const (
	reasonKeystorePasswordMissing = "KeystorePasswordMissing"
	reasonKeystorePasswordInvalid = "KeystorePasswordInvalid"
)

// keystorePassword is one keystore's password as observe read it.
type keystorePassword struct {
	value []byte
	// err is why it could not be read: a *kube.SecretKeyError for a missing Secret or key,
	// anything else from the API.
	err error
}

// keystorePasswords are the passwords of spec.keystores, read once per reconcile by observe.
type keystorePasswords struct {
	pkcs12, jks keystorePassword
}

// pkcs12Keystore and jksKeystore are the keystores the spec asks for (nil: none).
func pkcs12Keystore(cert *certpilotv1alpha1.Certificate) *certpilotv1alpha1.PKCS12Keystore {
	if k := cert.Spec.Keystores; k != nil && k.PKCS12 != nil && k.PKCS12.Create {
		return k.PKCS12
	}
	return nil
}

func jksKeystore(cert *certpilotv1alpha1.Certificate) *certpilotv1alpha1.JKSKeystore {
	if k := cert.Spec.Keystores; k != nil && k.JKS != nil && k.JKS.Create {
		return k.JKS
	}
	return nil
}

// outputKeysOf are the Secret keys the spec's keystores and formats may write, in
// certpilotv1alpha1.OutputKeys' order (a trust store only when ca.crt is not empty).
func outputKeysOf(cert *certpilotv1alpha1.Certificate) []string {
	asked := map[string]bool{}
	if pkcs12Keystore(cert) != nil {
		asked[certpilotv1alpha1.PKCS12KeystoreKey], asked[certpilotv1alpha1.PKCS12TruststoreKey] = true, true
	}
	if jksKeystore(cert) != nil {
		asked[certpilotv1alpha1.JKSKeystoreKey], asked[certpilotv1alpha1.JKSTruststoreKey] = true, true
	}
	for _, format := range cert.Spec.AdditionalOutputFormats {
		switch format.Type {
		case certpilotv1alpha1.OutputFormatDER:
			asked[certpilotv1alpha1.DERKeyKey] = true
		case certpilotv1alpha1.OutputFormatCombinedPEM:
			asked[certpilotv1alpha1.CombinedPEMKey] = true
		}
	}
	var keys []string
	for _, key := range certpilotv1alpha1.OutputKeys {
		if asked[key] {
			keys = append(keys, key)
		}
	}
	return keys
}

// observeKeystorePasswords reads the passwords the spec names, from the API (the Secrets are
// not certpilot's, so not cached); a Secret both keystores name is read once. Nothing is read
// for a Certificate without keystores.
func (r *CertificateReconciler) observeKeystorePasswords(ctx context.Context, cert *certpilotv1alpha1.Certificate) keystorePasswords {
	var passwords keystorePasswords
	read := map[string]*corev1.Secret{}
	readKey := func(ref *certpilotv1alpha1.SecretKeySelector) keystorePassword {
		if ref == nil {
			return keystorePassword{}
		}
		secret, seen := read[ref.Name]
		if !seen {
			var err error
			if secret, err = kube.ReadSecret(ctx, r.APIReader, cert.Namespace, ref.Name); err != nil {
				return keystorePassword{err: err}
			}
			read[ref.Name] = secret
		}
		if secret == nil {
			return keystorePassword{err: &kube.SecretKeyError{Missing: true, Namespace: cert.Namespace, Name: ref.Name, Key: ref.Key}}
		}
		value, ok := secret.Data[ref.Key]
		if !ok {
			return keystorePassword{err: &kube.SecretKeyError{Namespace: cert.Namespace, Name: ref.Name, Key: ref.Key}}
		}
		return keystorePassword{value: value}
	}
	if p := pkcs12Keystore(cert); p != nil && p.Profile != certpilotv1alpha1.PKCS12ProfilePasswordless {
		passwords.pkcs12 = readKey(p.PasswordSecretRef)
	}
	if j := jksKeystore(cert); j != nil {
		passwords.jks = readKey(j.PasswordSecretRef)
	}
	return passwords
}

// outputs is what spec.keystores and spec.additionalOutputFormats make of one certificate.
type outputs struct {
	// data are the keys the spec asks for and their values.
	data map[string][]byte
	// keep are keys the spec asks for that cannot be made now (their keystore's password is
	// missing or unusable): the Secret keeps what it has under them.
	keep []string
	// problem, when set, is why: a stalled error naming the Secret and key of the password.
	problem *stalledError
}

// makeOutputs makes the outputs the spec asks for from a certificate Secret's tls.key, tls.crt
// and ca.crt. The error is an unreadable certificate or key, or a password the API could not
// be asked for; a password that is missing or unusable is outputs.problem.
func makeOutputs(cert *certpilotv1alpha1.Certificate, data map[string][]byte, passwords keystorePasswords) (outputs, error) {
	out := outputs{data: map[string][]byte{}}
	in := pki.KeystoreInput{KeyPEM: data[corev1.TLSPrivateKeyKey], ChainPEM: data[corev1.TLSCertKey], CAPEM: data[corev1.ServiceAccountRootCAKey]}
	for _, format := range cert.Spec.AdditionalOutputFormats {
		switch format.Type {
		case certpilotv1alpha1.OutputFormatDER:
			der, err := pki.EncodeKeyDER(in.KeyPEM)
			if err != nil {
				return outputs{}, fmt.Errorf("encoding %s: %w", certpilotv1alpha1.DERKeyKey, err)
			}
			out.data[certpilotv1alpha1.DERKeyKey] = der
		case certpilotv1alpha1.OutputFormatCombinedPEM:
			out.data[certpilotv1alpha1.CombinedPEMKey] = pki.Bundle(in.KeyPEM, in.ChainPEM)
		}
	}
	for _, k := range keystoreOutputsOf(cert, in, passwords) {
		problem, err := k.problem(cert.Namespace)
		if err != nil {
			return outputs{}, err
		}
		if problem != nil {
			out.keep = append(out.keep, k.keystoreKey, k.trustKey)
			if out.problem == nil {
				out.problem = problem
			}
			continue
		}
		store, err := k.encodeStore(k.password.value)
		if err != nil {
			return outputs{}, fmt.Errorf("encoding the %s keystore: %w", k.field, err)
		}
		out.data[k.keystoreKey] = store
		trust, err := k.encodeTrust(k.password.value)
		if err != nil {
			return outputs{}, fmt.Errorf("encoding the %s trust store: %w", k.field, err)
		}
		if trust != nil { // an empty ca.crt has no trust store
			out.data[k.trustKey] = trust
		}
	}
	return out, nil
}

// keystoreOutput is one keystore the spec asks for: its password and how it is encoded.
type keystoreOutput struct {
	// field is its name under spec.keystores.
	field                    string
	ref                      *certpilotv1alpha1.SecretKeySelector
	password                 keystorePassword
	keystoreKey, trustKey    string
	check                    func(password []byte) error
	encodeStore, encodeTrust func(password []byte) ([]byte, error)
}

// keystoreOutputsOf are the keystores the spec asks for, made from in with passwords.
func keystoreOutputsOf(cert *certpilotv1alpha1.Certificate, in pki.KeystoreInput, passwords keystorePasswords) []keystoreOutput {
	var keystores []keystoreOutput
	if p := pkcs12Keystore(cert); p != nil {
		keystores = append(keystores, keystoreOutput{field: "pkcs12", ref: p.PasswordSecretRef, password: passwords.pkcs12,
			keystoreKey: certpilotv1alpha1.PKCS12KeystoreKey, trustKey: certpilotv1alpha1.PKCS12TruststoreKey,
			check:       func(pw []byte) error { return pki.CheckPKCS12Password(p.Profile, pw) },
			encodeStore: func(pw []byte) ([]byte, error) { return pki.EncodePKCS12(in, p.Profile, pw) },
			encodeTrust: func(pw []byte) ([]byte, error) { return pki.EncodePKCS12TrustStore(in, p.Profile, pw) }})
	}
	if j := jksKeystore(cert); j != nil {
		keystores = append(keystores, keystoreOutput{field: "jks", ref: j.PasswordSecretRef, password: passwords.jks,
			keystoreKey: certpilotv1alpha1.JKSKeystoreKey, trustKey: certpilotv1alpha1.JKSTruststoreKey,
			check:       pki.CheckJKSPassword,
			encodeStore: func(pw []byte) ([]byte, error) { return pki.EncodeJKS(in, j.Alias, pw) },
			encodeTrust: func(pw []byte) ([]byte, error) { return pki.EncodeJKSTrustStore(in, pw) }})
	}
	return keystores
}

// problem is the stalled error of a keystore whose password Secret or key is missing, or whose
// password cannot protect it; err an API error while reading the password.
func (k keystoreOutput) problem(namespace string) (*stalledError, error) {
	if k.password.err != nil {
		var missing *kube.SecretKeyError
		if !errors.As(k.password.err, &missing) {
			return nil, k.password.err
		}
		return &stalledError{Reason: reasonKeystorePasswordMissing, Message: fmt.Sprintf(
			"spec.keystores.%s.passwordSecretRef: %v; the keystore is written once the password is there "+
				"(certpilot looks again within 10 minutes, or at once when the Certificate changes)", k.field, missing)}, nil
	}
	var invalid *pki.PasswordError
	if err := k.check(k.password.value); errors.As(err, &invalid) {
		return &stalledError{Reason: reasonKeystorePasswordInvalid, Message: fmt.Sprintf(
			"spec.keystores.%s: the password in Secret %s/%s, key %q, cannot protect the keystore: %s",
			k.field, namespace, k.ref.Name, k.ref.Key, invalid.Reason)}, nil
	} else if err != nil {
		return nil, err
	}
	return nil, nil
}

// keystoresNotReady is the Ready condition of a Certificate whose new certificate was just
// stored without a keystore the spec asks for (its password is missing or unusable); nil when
// every keystore was written. The next reconcile stalls on the same problem (decideOutputs).
func keystoresNotReady(run *certificateRun) *metav1.Condition {
	for _, k := range keystoreOutputsOf(run.cert, pki.KeystoreInput{}, run.observed.passwords) {
		if problem, _ := k.problem(run.cert.Namespace); problem != nil {
			return &metav1.Condition{Status: metav1.ConditionFalse, Reason: problem.Reason, Message: problem.Message}
		}
	}
	return nil
}

// addOutputs adds to the data of a certificate Secret about to be written the outputs the spec
// asks for, made from that data; a keystore whose password is missing or unusable keeps what
// existing (the Secret as it is, nil for a create) has under its keys.
func addOutputs(run *certificateRun, existing *corev1.Secret, data map[string][]byte) error {
	out, err := makeOutputs(run.cert, data, run.observed.passwords)
	if err != nil {
		return err
	}
	maps.Copy(data, out.data)
	if existing != nil {
		for _, key := range out.keep {
			if value, ok := existing.Data[key]; ok {
				data[key] = value
			}
		}
	}
	return nil
}

// outputsDecision is what decideOutputs concludes.
type outputsDecision struct {
	// patch, when set, sets and removes output keys of the Secret's data (a JSON merge patch's
	// "data"); written, the keys it sets or removes.
	patch   map[string]any
	written []string
	// ready and stall, when set, replace the Ready condition and end the reconcile: a keystore
	// the spec asks for cannot be written.
	ready *metav1.Condition
	stall error
}

// decideOutputs decides, when the decision issues nothing now, what to change in the served
// Secret's outputs: a pure function of the spec, the Secret, the passwords and the decision.
// While a certificate is being issued it decides nothing: the new certificate's write carries
// the outputs.
func decideOutputs(cert *certpilotv1alpha1.Certificate, secret *corev1.Secret, passwords keystorePasswords, d issuanceDecision) (outputsDecision, error) {
	var decision outputsDecision
	issuing := d.requeueAfter == 0 && d.wait == nil
	if issuing || secret == nil || d.current.leaf == nil {
		return decision, nil
	}
	out, err := makeOutputs(cert, secret.Data, passwords)
	if err != nil {
		return decision, err
	}
	patch := map[string]any{}
	for _, key := range certpilotv1alpha1.OutputKeys {
		value, present := secret.Data[key]
		want, wanted := out.data[key]
		switch {
		case wanted && (!present || string(value) != string(want)):
			patch[key] = want
		case !wanted && present && !slices.Contains(out.keep, key):
			patch[key] = nil
		default:
			continue
		}
		decision.written = append(decision.written, key)
	}
	if len(patch) > 0 {
		decision.patch = patch
	}
	if out.problem != nil {
		// Looked at again no later than the decision would have: a renewal is not delayed.
		after := stalledRecheck
		if d.requeueAfter > 0 {
			after = min(after, d.requeueAfter)
		}
		if w, ok := asWait(d.wait); ok {
			after = min(after, w.After)
		}
		decision.ready = &metav1.Condition{Status: metav1.ConditionFalse, Reason: out.problem.Reason, Message: out.problem.Message}
		decision.stall = &stalledError{Reason: out.problem.Reason, Message: out.problem.Message, After: max(after, time.Second)}
	}
	return decision, nil
}

// withOutputs adds an outputs patch to the secretTemplate's merge patch of secret (nil: none),
// so that one write, with one resourceVersion, carries both.
func withOutputs(templatePatch map[string]any, secret *corev1.Secret, outputsPatch map[string]any) map[string]any {
	if outputsPatch == nil {
		return templatePatch
	}
	patch := templatePatch
	if patch == nil {
		patch = map[string]any{"metadata": map[string]any{"resourceVersion": secret.ResourceVersion}}
	}
	patch["data"] = outputsPatch
	return patch
}
