package v1alpha1_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/certpilot/certpilot/internal/testenv"
)

// TestCertificateKeystoreAdmission: each rule of spec.keystores and
// spec.additionalOutputFormats, on the real apiserver.
func TestCertificateKeystoreAdmission(t *testing.T) {
	testenv.SkipIfShort(t)
	tests := map[string]struct {
		edit      map[string]any
		wantError string
	}{
		"pkcs12 with a password":              {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true, passwordSecretRef: {name: p12, key: password}}}"}},
		"pkcs12 LegacyRC2":                    {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true, profile: LegacyRC2, passwordSecretRef: {name: p12, key: password}}}"}},
		"pkcs12 LegacyDES":                    {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true, profile: LegacyDES, passwordSecretRef: {name: p12, key: password}}}"}},
		"pkcs12 passwordless":                 {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true, profile: Passwordless}}"}},
		"pkcs12 without a password":           {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true}}"}, wantError: "keystores.pkcs12.passwordSecretRef is required: name the Secret key that holds the password, or set profile: Passwordless"},
		"pkcs12 not created, no password":     {edit: map[string]any{"spec.keystores": "{pkcs12: {create: false}}"}},
		"pkcs12 passwordless with a password": {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true, profile: Passwordless, passwordSecretRef: {name: p12, key: password}}}"}, wantError: "keystores.pkcs12 with profile Passwordless takes no passwordSecretRef"},
		"pkcs12 unknown profile":              {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true, profile: Modern2030, passwordSecretRef: {name: p12, key: password}}}"}, wantError: `spec.keystores.pkcs12.profile: Unsupported value: "Modern2030"`},
		"pkcs12 without create":               {edit: map[string]any{"spec.keystores": "{pkcs12: {profile: Passwordless}}"}, wantError: "spec.keystores.pkcs12.create: Required value"},
		"pkcs12 password key with a slash":    {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true, passwordSecretRef: {name: p12, key: a/b}}}"}, wantError: "spec.keystores.pkcs12.passwordSecretRef.key"},
		"pkcs12 password in the certificate":  {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true, passwordSecretRef: {name: www-tls, key: password}}}"}, wantError: "a keystore's passwordSecretRef cannot name the certificate Secret (spec.secretName)"},
		"jks":                                 {edit: map[string]any{"spec.keystores": "{jks: {create: true, passwordSecretRef: {name: jks, key: password}}}"}},
		"jks with an alias":                   {edit: map[string]any{"spec.keystores": "{jks: {create: true, alias: tomcat, passwordSecretRef: {name: jks, key: password}}}"}},
		"jks without a password":              {edit: map[string]any{"spec.keystores": "{jks: {create: true}}"}, wantError: "keystores.jks.passwordSecretRef is required: a Java KeyStore always has a password"},
		"jks uppercase alias":                 {edit: map[string]any{"spec.keystores": "{jks: {create: true, alias: Tomcat, passwordSecretRef: {name: jks, key: password}}}"}, wantError: "keystores.jks.alias: lowercase letters, digits"},
		"jks empty alias":                     {edit: map[string]any{"spec.keystores": "{jks: {create: true, alias: '', passwordSecretRef: {name: jks, key: password}}}"}, wantError: "spec.keystores.jks.alias"},
		"jks password in the certificate":     {edit: map[string]any{"spec.keystores": "{jks: {create: true, passwordSecretRef: {name: www-tls, key: password}}}"}, wantError: "a keystore's passwordSecretRef cannot name the certificate Secret"},
		"both keystores, one password Secret": {edit: map[string]any{"spec.keystores": "{pkcs12: {create: true, passwordSecretRef: {name: pw, key: p}}, jks: {create: true, passwordSecretRef: {name: pw, key: p}}}"}},
		"DER and CombinedPEM":                 {edit: map[string]any{"spec.additionalOutputFormats": "[{type: DER}, {type: CombinedPEM}]"}},
		"an unknown output format":            {edit: map[string]any{"spec.additionalOutputFormats": "[{type: PKCS7}]"}, wantError: `spec.additionalOutputFormats[0].type: Unsupported value: "PKCS7"`},
		"an output format twice":              {edit: map[string]any{"spec.additionalOutputFormats": "[{type: DER}, {type: DER}]"}, wantError: `spec.additionalOutputFormats[1]: Duplicate value: {"type":"DER"}`},
		"an output format without a type":     {edit: map[string]any{"spec.additionalOutputFormats": "[{}]"}, wantError: "spec.additionalOutputFormats[0].type: Required value"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			checkAdmission(t, createDryRun(t, object(t, validCertificate, tc.edit)), tc.wantError)
		})
	}
}

// TestCertificateKeystoreDefaults: the PKCS#12 profile defaults to Modern2023 and the JKS alias
// to "certificate".
func TestCertificateKeystoreDefaults(t *testing.T) {
	testenv.SkipIfShort(t)
	obj := object(t, validCertificate, map[string]any{"spec.keystores": "{pkcs12: {create: true, passwordSecretRef: {name: p, key: k}}, jks: {create: true, passwordSecretRef: {name: p, key: k}}}"})
	if err := createDryRun(t, obj); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]any{
		"spec.keystores.pkcs12.profile": "Modern2023",
		"spec.keystores.jks.alias":      "certificate",
	} {
		got, _, _ := unstructured.NestedFieldNoCopy(obj.Object, strings.Split(path, ".")...)
		if got != want {
			t.Errorf("%s = %v, want default %v", path, got, want)
		}
	}
}
