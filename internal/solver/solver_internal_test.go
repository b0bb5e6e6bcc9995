package solver

import (
	"testing"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/outcome"
)

// TestNew: each solver spec gets the solver of its challenge type, which says whether it renews
// by itself and whether a deleted Certificate's responses need a finalizer to be removed.
func TestNew(t *testing.T) {
	lb := certpilotv1alpha1.LoadBalancerRef{Name: "lb"}
	tests := map[string]struct {
		spec                         certpilotv1alpha1.Solver
		wantType                     string
		wantAutoRenew, wantFinalizer bool
	}{
		"tls-alpn-01": {spec: certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{LoadBalancer: lb}},
			wantType: ChallengeTLSALPN01, wantAutoRenew: true},
		"http-01": {spec: certpilotv1alpha1.Solver{HTTP01: &certpilotv1alpha1.HTTP01Solver{LoadBalancer: lb}},
			wantType: ChallengeHTTP01, wantAutoRenew: true},
		"dns-01 RFC 2136": {spec: certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{RFC2136: &certpilotv1alpha1.RFC2136DNS01{}}},
			wantType: ChallengeDNS01, wantAutoRenew: true, wantFinalizer: true},
		"dns-01 manual": {spec: certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{Manual: &certpilotv1alpha1.ManualDNS01{}}},
			wantType: ChallengeDNS01},
		"dns-persist-01": {spec: certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{Persist: &certpilotv1alpha1.PersistDNS01{}}},
			wantType: ChallengeDNSPersist01, wantAutoRenew: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := New(&Deps{}, Owner{}, &tc.spec, Source{})
			if err != nil {
				t.Fatal(err)
			}
			if s.Type() != tc.wantType || s.AutoRenewable() != tc.wantAutoRenew || s.NeedsFinalizer() != tc.wantFinalizer {
				t.Errorf("type %s, auto-renewable %v, finalizer %v; want %s, %v, %v",
					s.Type(), s.AutoRenewable(), s.NeedsFinalizer(), tc.wantType, tc.wantAutoRenew, tc.wantFinalizer)
			}
		})
	}
	for name, spec := range map[string]certpilotv1alpha1.Solver{
		"no challenge type":     {},
		"dns-01 without a kind": {DNS01: &certpilotv1alpha1.DNS01Solver{}},
	} {
		if _, err := New(&Deps{}, Owner{}, &spec, Source{}); err == nil {
			t.Errorf("%s: New succeeded", name)
		} else if stalled, ok := outcome.AsStalled(err); !ok || stalled.Reason != "NoSolver" {
			t.Errorf("%s: New = %v, want Stalled NoSolver", name, err)
		}
	}
}
