package v1alpha1_test

import (
	"testing"

	"github.com/certpilot/certpilot/internal/testenv"
)

// TestFallbackIssuerAdmission: spec.fallbackIssuerRefs lists at most 3 issuers, none twice and
// not spec.issuerRef (validCertificate's is ClusterIssuer letsencrypt); kinds are compared after
// defaulting, so a name without a kind is an Issuer.
func TestFallbackIssuerAdmission(t *testing.T) {
	testenv.SkipIfShort(t)
	tests := map[string]struct {
		fallbacks string
		issuerRef string // replaces spec.issuerRef when set
		wantError string
	}{
		"one fallback":            {fallbacks: "[{kind: ClusterIssuer, name: zerossl}]"},
		"three, kinds mixed":      {fallbacks: "[{kind: ClusterIssuer, name: zerossl}, {name: internal}, {kind: ClusterIssuer, name: google}]"},
		"same name, another kind": {fallbacks: "[{name: letsencrypt}]"},
		"empty list":              {fallbacks: "[]"},
		"the issuer itself":       {fallbacks: "[{kind: ClusterIssuer, name: letsencrypt}]", wantError: "spec.fallbackIssuerRefs must not list spec.issuerRef"},
		"the issuer itself, kinds defaulted": {
			issuerRef: "{name: letsencrypt}", fallbacks: "[{name: letsencrypt}]", wantError: "spec.fallbackIssuerRefs must not list spec.issuerRef",
		},
		"an issuer twice": {
			fallbacks: "[{kind: ClusterIssuer, name: zerossl}, {kind: ClusterIssuer, name: zerossl}]", wantError: "spec.fallbackIssuerRefs must not list an issuer twice",
		},
		"an issuer twice, kinds defaulted": {
			fallbacks: "[{name: internal}, {kind: Issuer, name: internal}]", wantError: "spec.fallbackIssuerRefs must not list an issuer twice",
		},
		"four": {
			fallbacks: "[{name: a}, {name: b}, {name: c}, {name: d}]", wantError: "must have at most 3 items",
		},
		"unknown kind": {fallbacks: "[{kind: CA, name: zerossl}]", wantError: `Unsupported value: "CA"`},
		"empty name":   {fallbacks: "[{kind: ClusterIssuer, name: ''}]", wantError: "spec.fallbackIssuerRefs[0].name"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			edit := map[string]any{"spec.fallbackIssuerRefs": tc.fallbacks}
			if tc.issuerRef != "" {
				edit["spec.issuerRef"] = tc.issuerRef
			}
			checkAdmission(t, createDryRun(t, object(t, validCertificate, edit)), tc.wantError)
		})
	}
}
