package source

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

func TestParseAnnotations(t *testing.T) {
	for name, tc := range map[string]struct {
		annotations   map[string]string
		want          template
		wantAnnotated bool
		wantErr       string
	}{
		"none": {annotations: map[string]string{"cert-manager.io/cluster-issuer": "le"}},
		"issuer": {
			annotations:   map[string]string{AnnotationIssuer: "le"},
			want:          template{IssuerRef: certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "le"}},
			wantAnnotated: true,
		},
		"cluster issuer with everything": {
			annotations: map[string]string{
				AnnotationClusterIssuer:       "le",
				AnnotationRenewBefore:         "720h",
				AnnotationPrivateKeyAlgorithm: "rsa",
				AnnotationPrivateKeySize:      "3072",
				AnnotationSolver:              "dns01:\n  manual: {}\n",
			},
			want: template{
				IssuerRef:   certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "le"},
				RenewBefore: &metav1.Duration{Duration: 720 * time.Hour},
				PrivateKey:  &certpilotv1alpha1.PrivateKey{Algorithm: "RSA", Size: 3072},
				Solver:      &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{Manual: &certpilotv1alpha1.ManualDNS01{}}},
			},
			wantAnnotated: true,
		},
		"size alone is ECDSA": {
			annotations: map[string]string{AnnotationIssuer: "le", AnnotationPrivateKeySize: "384"},
			want: template{
				IssuerRef:  certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "le"},
				PrivateKey: &certpilotv1alpha1.PrivateKey{Algorithm: "ECDSA", Size: 384},
			},
			wantAnnotated: true,
		},
		"json solver": {
			annotations: map[string]string{AnnotationIssuer: "le", AnnotationSolver: `{"tlsALPN01":{"loadBalancer":{"name":"edge"}}}`},
			want: template{
				IssuerRef: certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "le"},
				Solver: &certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{
					LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: "edge"}}},
			},
			wantAnnotated: true,
		},
		"fallback issuers, bare names of the issuer's kind": {
			annotations: map[string]string{AnnotationClusterIssuer: "le", AnnotationFallbackIssuers: "zerossl, Issuer/internal"},
			want: template{
				IssuerRef: certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "le"},
				FallbackIssuerRefs: []certpilotv1alpha1.IssuerReference{
					{Kind: "ClusterIssuer", Name: "zerossl"}, {Kind: "Issuer", Name: "internal"}},
			},
			wantAnnotated: true,
		},
		"fallback issuer twice": {
			annotations:   map[string]string{AnnotationIssuer: "le", AnnotationFallbackIssuers: "zerossl,Issuer/zerossl"},
			wantAnnotated: true, wantErr: "twice",
		},
		"fallback issuer is the issuer": {
			annotations:   map[string]string{AnnotationIssuer: "le", AnnotationFallbackIssuers: "le"},
			wantAnnotated: true, wantErr: "the issuer itself",
		},
		"fallback issuer of an unknown kind": {
			annotations:   map[string]string{AnnotationIssuer: "le", AnnotationFallbackIssuers: "CA/zerossl"},
			wantAnnotated: true, wantErr: "is not Issuer/<name>",
		},
		"too many fallback issuers": {
			annotations:   map[string]string{AnnotationIssuer: "le", AnnotationFallbackIssuers: "a,b,c,d"},
			wantAnnotated: true, wantErr: "at most 3",
		},
		"both issuers":      {annotations: map[string]string{AnnotationIssuer: "a", AnnotationClusterIssuer: "b"}, wantAnnotated: true, wantErr: "not both"},
		"empty issuer":      {annotations: map[string]string{AnnotationClusterIssuer: " "}, wantAnnotated: true, wantErr: "names no issuer"},
		"bad duration":      {annotations: map[string]string{AnnotationIssuer: "a", AnnotationRenewBefore: "30d"}, wantAnnotated: true, wantErr: "not a duration"},
		"short duration":    {annotations: map[string]string{AnnotationIssuer: "a", AnnotationRenewBefore: "1m"}, wantAnnotated: true, wantErr: "at least 5m"},
		"bad algorithm":     {annotations: map[string]string{AnnotationIssuer: "a", AnnotationPrivateKeyAlgorithm: "Ed25519"}, wantAnnotated: true, wantErr: "ECDSA or RSA"},
		"bad RSA size":      {annotations: map[string]string{AnnotationIssuer: "a", AnnotationPrivateKeyAlgorithm: "RSA", AnnotationPrivateKeySize: "1024"}, wantAnnotated: true, wantErr: "2048, 3072 or 4096"},
		"size not a number": {annotations: map[string]string{AnnotationIssuer: "a", AnnotationPrivateKeySize: "big"}, wantAnnotated: true, wantErr: "not a number"},
		"unknown solver field": {annotations: map[string]string{AnnotationIssuer: "a", AnnotationSolver: `{"alpn":{}}`},
			wantAnnotated: true, wantErr: "not a solver"},
		"two solvers": {annotations: map[string]string{AnnotationIssuer: "a", AnnotationSolver: `{"http01":{"loadBalancer":{"name":"e"}},"dns01":{"manual":{}}}`},
			wantAnnotated: true, wantErr: "exactly one solver"},
	} {
		t.Run(name, func(t *testing.T) {
			got, annotated, err := parseAnnotations(tc.annotations)
			if annotated != tc.wantAnnotated {
				t.Errorf("annotated = %v, want %v", annotated, tc.wantAnnotated)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got, tc.want) {
				t.Errorf("template = %+v, want %+v", got, tc.want)
			}
		})
	}
}
