package kube

import (
	"bytes"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

func TestSecretCacheTransform(t *testing.T) {
	key, chain, ca := []byte("-----KEY-----\n"), []byte("-----LEAF-----\n-----INTERMEDIATE-----\n"), []byte("-----ROOT-----\n")
	concat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := map[string]struct {
		secretType corev1.SecretType
		data       map[string][]byte
		wantShared bool
	}{
		"bundle is key then chain": {
			secretType: corev1.SecretTypeTLS,
			data:       map[string][]byte{"tls.key": key, "tls.crt": chain, "ca.crt": ca, certpilotv1alpha1.BundleKey: concat(key, chain)},
			wantShared: true,
		},
		"key without a final newline": {
			secretType: corev1.SecretTypeTLS,
			data: map[string][]byte{"tls.key": []byte("-----KEY-----"), "tls.crt": chain,
				certpilotv1alpha1.BundleKey: concat([]byte("-----KEY-----\n"), chain)},
			wantShared: true,
		},
		"bundle of another key": {
			secretType: corev1.SecretTypeTLS,
			data:       map[string][]byte{"tls.key": []byte("-----OTHER-----\n"), "tls.crt": chain, certpilotv1alpha1.BundleKey: concat(key, chain)},
		},
		"bundle with more between": {
			secretType: corev1.SecretTypeTLS,
			data:       map[string][]byte{"tls.key": key, "tls.crt": chain, certpilotv1alpha1.BundleKey: concat(key, []byte("x\n"), chain)},
		},
		"no bundle": {
			secretType: corev1.SecretTypeTLS,
			data:       map[string][]byte{"tls.key": key, "tls.crt": chain},
		},
		"an opaque Secret": {
			secretType: corev1.SecretTypeOpaque,
			data:       map[string][]byte{"tls.key": key, "tls.crt": chain, certpilotv1alpha1.BundleKey: concat(key, chain)},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			want := map[string][]byte{}
			for k, v := range tc.data {
				want[k] = bytes.Clone(v)
			}
			secret := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "certpilot"}}},
				Type:       tc.secretType, Data: tc.data,
			}
			out, err := SecretCacheTransform()(secret)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Secret)
			if got.ManagedFields != nil {
				t.Errorf("managedFields kept: %v", got.ManagedFields)
			}
			if len(got.Data) != len(want) {
				t.Fatalf("keys %v, want %v", got.Data, want)
			}
			for k, v := range want {
				if !bytes.Equal(got.Data[k], v) {
					t.Errorf("%s = %q, want %q", k, got.Data[k], v)
				}
			}
			bundle := got.Data[certpilotv1alpha1.BundleKey]
			shared := len(bundle) > 0 && unsafe.SliceData(got.Data["tls.key"]) == unsafe.SliceData(bundle)
			if shared != tc.wantShared {
				t.Errorf("tls.key shares bundle.pem's bytes: %v, want %v", shared, tc.wantShared)
			}
			if shared {
				// An append to tls.key must not write into bundle.pem.
				_ = append(got.Data["tls.key"], 'X')
				if !bytes.Equal(got.Data[certpilotv1alpha1.BundleKey], want[certpilotv1alpha1.BundleKey]) {
					t.Errorf("appending to tls.key changed bundle.pem")
				}
			}
		})
	}
}

func TestSecretCacheTransformSharesCA(t *testing.T) {
	transform := SecretCacheTransform()
	var first []byte
	for i := range 3 {
		secret := &corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{"ca.crt": []byte("-----ROOT-----\n")}}
		out, err := transform(secret)
		if err != nil {
			t.Fatal(err)
		}
		ca := out.(*corev1.Secret).Data["ca.crt"]
		if string(ca) != "-----ROOT-----\n" {
			t.Fatalf("ca.crt = %q", ca)
		}
		if i == 0 {
			first = ca
		} else if unsafe.SliceData(ca) != unsafe.SliceData(first) {
			t.Errorf("Secret %d holds its own copy of ca.crt", i)
		}
	}
	if out, err := transform(&corev1.ConfigMap{}); err != nil || out == nil {
		t.Errorf("another kind: %v, %v", out, err)
	}
}
