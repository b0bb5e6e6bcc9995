package kube

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

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
				ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "certpilot"}},
					OwnerReferences: []metav1.OwnerReference{certificateController("c")}},
				Type: tc.secretType, Data: tc.data,
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
		secret := &corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{"ca.crt": []byte("-----ROOT-----\n")},
			ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{certificateController(fmt.Sprint(i))}}}
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

// certificateController is the controller owner reference certpilot puts on its certificate
// and claim Secrets.
func certificateController(name string) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate", Name: name,
		UID: types.UID("uid-" + name), Controller: ptr.To(true)}
}

// TestSecretCacheTransformKeepsMetadataOnly: a Secret no Certificate controls (labelled as
// certpilot's by anyone, or an account key) keeps only its name, identity, type, certpilot's
// labels and its controller reference in the cache; one a Certificate controls is kept whole.
func TestSecretCacheTransformKeepsMetadataOnly(t *testing.T) {
	asController := func(ref metav1.OwnerReference) metav1.OwnerReference { ref.Controller = ptr.To(true); return ref }
	tests := map[string]struct {
		owners    []metav1.OwnerReference
		wantWhole bool
	}{
		"controlled by a Certificate":               {owners: []metav1.OwnerReference{certificateController("c")}, wantWhole: true},
		"no owner":                                  {},
		"a Certificate owns, not controls":          {owners: []metav1.OwnerReference{{APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate", Name: "c", UID: "u"}}},
		"controlled by a Deployment":                {owners: []metav1.OwnerReference{asController(metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "d", UID: "u"})}},
		"controlled by another group's Certificate": {owners: []metav1.OwnerReference{asController(metav1.OwnerReference{APIVersion: "cert-manager.io/v1", Kind: "Certificate", Name: "c", UID: "u"})}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			labels := map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue, certpilotv1alpha1.LabelCertificate: "c"}
			for i := range 1000 {
				labels[fmt.Sprintf("tenant.example/label-%d", i)] = "x"
			}
			secret := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: "tenant", Name: "s", UID: "uid-s", ResourceVersion: "7", Labels: labels,
					Annotations:     map[string]string{"certpilot.dev/claim-of": "s", "big": strings.Repeat("x", 200<<10)},
					Finalizers:      []string{"tenant.example/keep"},
					OwnerReferences: tc.owners, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "tenant"}},
				},
				Type: corev1.SecretTypeTLS,
				Data: map[string][]byte{"tls.key": []byte("db_password=hunter2"), "tls.crt": make([]byte, 1<<20)},
			}
			out, err := SecretCacheTransform()(secret)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Secret)
			if got.ManagedFields != nil {
				t.Errorf("managedFields kept")
			}
			if tc.wantWhole {
				if len(got.Data) != 2 || len(got.Annotations) != 2 || len(got.Labels) != len(labels) || len(got.Finalizers) != 1 {
					t.Errorf("a Certificate's Secret lost something: %d data keys, %d annotations, %d labels, finalizers %v",
						len(got.Data), len(got.Annotations), len(got.Labels), got.Finalizers)
				}
				return
			}
			if got.Data != nil || got.StringData != nil || got.Annotations != nil || got.Finalizers != nil {
				t.Errorf("kept data %d keys, annotations %d, finalizers %v; want none", len(got.Data), len(got.Annotations), got.Finalizers)
			}
			wantLabels := map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue, certpilotv1alpha1.LabelCertificate: "c"}
			if fmt.Sprint(got.Labels) != fmt.Sprint(wantLabels) {
				t.Errorf("labels %v, want %v", got.Labels, wantLabels)
			}
			if got.Name != "s" || got.Namespace != "tenant" || got.UID != "uid-s" || got.ResourceVersion != "7" || got.Type != corev1.SecretTypeTLS {
				t.Errorf("identity lost: %s/%s uid %s rv %s type %s", got.Namespace, got.Name, got.UID, got.ResourceVersion, got.Type)
			}
			wantController := metav1.GetControllerOf(secret)
			if gotController := metav1.GetControllerOf(got); fmt.Sprint(gotController) != fmt.Sprint(wantController) || len(got.OwnerReferences) > 1 {
				t.Errorf("owner references %v, want only the controller %v", got.OwnerReferences, wantController)
			}
			if ControlledByCertificate(got) {
				t.Errorf("a Secret kept as metadata counts as controlled by a Certificate")
			}
		})
	}
}
