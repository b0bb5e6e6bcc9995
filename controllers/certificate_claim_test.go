package controllers

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
)

// TestIssuedKey: storing a certificate takes the claim's key when it matches the certificate;
// a claim without a key, or with another one, fails the issuance (PrivateKeyLost, KeyMismatch).
// (One read step: objects in a fake client.)
func TestIssuedKey(t *testing.T) {
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "www", UID: "uid-www"},
		Spec:       certpilotv1alpha1.CertificateSpec{SecretName: "www-tls", DNSNames: []string{"www.example.test"}},
	}
	claimKey, otherKey := newTestKey(t), newTestKey(t)
	claimWith := func(keyPEM []byte) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "www-tls" + certpilotv1alpha1.ClaimSecretSuffix,
				Annotations:     map[string]string{annotationClaimOf: "www-tls"},
				Labels:          claimLabels(cert),
				OwnerReferences: []metav1.OwnerReference{*ownerReferenceOf(cert)}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{corev1.TLSPrivateKeyKey: keyPEM},
		}
	}

	tests := map[string]struct {
		objects    []*corev1.Secret
		leafKey    *testKey
		want       []byte
		wantReason string
	}{
		"the claim's key":             {objects: []*corev1.Secret{claimWith(claimKey.pem)}, leafKey: claimKey, want: claimKey.pem},
		"the claim holds another key": {objects: []*corev1.Secret{claimWith(otherKey.pem)}, leafKey: claimKey, wantReason: "KeyMismatch"},
		"the claim holds no key":      {objects: []*corev1.Secret{claimWith(nil)}, leafKey: claimKey, wantReason: "PrivateKeyLost"},
		"no claim":                    {leafKey: claimKey, wantReason: "PrivateKeyLost"},
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = certpilotv1alpha1.AddToScheme(scheme)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			builder := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cert.DeepCopy())
			for _, s := range tc.objects {
				builder = builder.WithObjects(s.DeepCopy())
			}
			c := builder.WithStatusSubresource(&certpilotv1alpha1.Certificate{}).Build()
			r := &CertificateReconciler{Client: c, APIReader: c, Recorder: discardRecorder{}}
			run := &certificateRun{cert: cert.DeepCopy(), now: time.Now(), patchBase: cert.DeepCopy(),
				order: &acme.Order{URL: "https://ca.example/order/1"}}
			got, err := r.parts().store.issuedKey(context.Background(), run, tc.leafKey.leaf(t, cert.Spec.DNSNames))
			if tc.want == nil {
				if w, ok := asWait(err); !ok || w.Reason != tc.wantReason {
					t.Fatalf("issuedKey = %d bytes, %v; want a failure %s", len(got), err, tc.wantReason)
				}
				return
			}
			if err != nil || string(got) != string(tc.want) {
				t.Fatalf("issuedKey = %d bytes, %v; want the matching key", len(got), err)
			}
		})
	}
}

type testKey struct {
	key crypto.Signer
	pem []byte
}

func newTestKey(t *testing.T) *testKey {
	t.Helper()
	key, err := pki.GenerateKey(certpilotv1alpha1.KeyAlgorithmECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	encoded, err := pki.EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &testKey{key: key, pem: encoded}
}

// leaf is a self-signed certificate for names with k's public key.
func (k *testKey) leaf(t *testing.T, names []string) *x509.Certificate {
	t.Helper()
	template := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, template, template, k.key.Public(), k.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// discardRecorder drops Events.
type discardRecorder struct{}

func (discardRecorder) Eventf(runtime.Object, runtime.Object, string, string, string, string, ...any) {
}
func (discardRecorder) AnnotatedEventf(runtime.Object, runtime.Object, map[string]string, string, string, string, string, ...any) {
}
