package solver

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

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

// TestChallengeHold: another Certificate's response is released MaxChallengeHold after its
// holder started holding it, however often the holder rewrote it since.
func TestChallengeHold(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ended := map[string]struct {
		heldSince, now time.Time
		want           bool
	}{
		"just written":              {start, start, false},
		"a second before the bound": {start, start.Add(MaxChallengeHold - time.Second), false},
		"at the bound":              {start, start.Add(MaxChallengeHold), true},
		"long after":                {start, start.Add(time.Hour), true},
		"no time (older versions)":  {time.Time{}, start.Add(time.Hour), false},
		"a time in the future":      {start.Add(time.Hour), start, false},
	}
	for name, tc := range ended {
		t.Run("ended/"+name, func(t *testing.T) {
			if got := holdEnded(tc.heldSince, tc.now, MaxChallengeHold); got != tc.want {
				t.Errorf("holdEnded(%v, %v) = %v, want %v", tc.heldSince, tc.now, got, tc.want)
			}
		})
	}
	starts := map[string]struct {
		holding        bool
		heldSince, now time.Time
		want           time.Time
	}{
		"a new hold":                           {false, start, start.Add(time.Minute), start.Add(time.Minute)},
		"the holder rewrites: the start stays": {true, start, start.Add(5 * time.Minute), start},
		"the holder's value had no time":       {true, time.Time{}, start, start},
		"a start in the future is not trusted": {true, start.Add(time.Hour), start, start},
	}
	for name, tc := range starts {
		t.Run("start/"+name, func(t *testing.T) {
			if got := holdStart(tc.holding, tc.heldSince, tc.now); !got.Equal(tc.want) {
				t.Errorf("holdStart = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSplitBatch: a grouped write the apiserver refuses for its content is written again one Put
// at a time; one refused for the moment, or carrying one Put, is not.
func TestSplitBatch(t *testing.T) {
	put := &shardChange{compute: func(*corev1.Secret) (map[string]any, map[string]any) { return nil, nil }}
	flush := &shardChange{}
	secrets := schema.GroupResource{Resource: "secrets"}
	invalid := apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, "lb-challenges-0", nil)
	tests := map[string]struct {
		err   error
		batch []*shardChange
		want  bool
	}{
		"written":                    {nil, []*shardChange{put, put}, false},
		"invalid, two Puts":          {invalid, []*shardChange{put, put}, true},
		"invalid, wrapped":           {fmt.Errorf("writing challenge Secret: %w", invalid), []*shardChange{put, put}, true},
		"too large, two Puts":        {apierrors.NewRequestEntityTooLargeError("limit is 1048576"), []*shardChange{put, put, flush}, true},
		"bad request, two Puts":      {apierrors.NewBadRequest("bad"), []*shardChange{put, put}, true},
		"invalid, one Put":           {invalid, []*shardChange{put}, false},
		"invalid, one Put and flush": {invalid, []*shardChange{put, flush}, false},
		"conflict":                   {apierrors.NewConflict(secrets, "lb-challenges-0", errors.New("changed")), []*shardChange{put, put}, false},
		"timeout":                    {context.DeadlineExceeded, []*shardChange{put, put}, false},
		"unavailable":                {apierrors.NewServiceUnavailable("down"), []*shardChange{put, put}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := splitBatch(tc.err, tc.batch); got != tc.want {
				t.Errorf("splitBatch(%v, %d changes) = %v, want %v", tc.err, len(tc.batch), got, tc.want)
			}
		})
	}
}
