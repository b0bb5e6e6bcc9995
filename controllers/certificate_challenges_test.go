package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// TestSelfCheckDelay: a response the load balancer does not serve yet is checked again soon at
// first, then less and less often, never more than every 5 minutes.
func TestSelfCheckDelay(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		reconcilingSince *time.Duration // nil: no Reconciling condition
		status           metav1.ConditionStatus
		want             time.Duration
	}{
		"no condition":             {want: 5 * time.Second},
		"reconciling for 1s":       {reconcilingSince: ptrDuration(time.Second), status: metav1.ConditionTrue, want: 5 * time.Second},
		"reconciling for 1 minute": {reconcilingSince: ptrDuration(time.Minute), status: metav1.ConditionTrue, want: 15 * time.Second},
		"reconciling for 10 min":   {reconcilingSince: ptrDuration(10 * time.Minute), status: metav1.ConditionTrue, want: 150 * time.Second},
		"reconciling for a day":    {reconcilingSince: ptrDuration(24 * time.Hour), status: metav1.ConditionTrue, want: 5 * time.Minute},
		"not reconciling":          {reconcilingSince: ptrDuration(time.Hour), status: metav1.ConditionFalse, want: 5 * time.Second},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cert := &certpilotv1alpha1.Certificate{}
			if tc.reconcilingSince != nil {
				cert.Status.Conditions = []metav1.Condition{{
					Type: certpilotv1alpha1.ConditionReconciling, Status: tc.status, Reason: "Progressing",
					LastTransitionTime: metav1.NewTime(now.Add(-*tc.reconcilingSince)),
				}}
			}
			if got := selfCheckDelay(&certificateRun{cert: cert, now: now}); got != tc.want {
				t.Errorf("selfCheckDelay = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSameNames(t *testing.T) {
	tests := map[string]struct {
		a, b []string
		want bool
	}{
		"same order":       {a: []string{"a.test", "b.test"}, b: []string{"a.test", "b.test"}, want: true},
		"other order":      {a: []string{"b.test", "a.test"}, b: []string{"a.test", "b.test"}, want: true},
		"one more":         {a: []string{"a.test"}, b: []string{"a.test", "b.test"}, want: false},
		"other name":       {a: []string{"a.test"}, b: []string{"c.test"}, want: false},
		"wildcard differs": {a: []string{"*.a.test"}, b: []string{"a.test"}, want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := sameNames(tc.a, tc.b); got != tc.want {
				t.Errorf("sameNames(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

func ptrDuration(d time.Duration) *time.Duration { return &d }
