package controllers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

const (
	typeReady       = certpilotv1alpha1.ConditionReady
	typeReconciling = certpilotv1alpha1.ConditionReconciling
	typeStalled     = certpilotv1alpha1.ConditionStalled
)

// wantCondition is the expected state of one condition; a nil *wantCondition means absent.
type wantCondition struct {
	status  metav1.ConditionStatus
	reason  string
	message string
}

func TestSummarize(t *testing.T) {
	transient := errors.New("fetching ACME directory https://ca.example/dir: connection refused")
	tests := map[string]struct {
		err                          error
		wantReady                    wantCondition
		wantReconciling, wantStalled *wantCondition
	}{
		"success": {
			err:       nil,
			wantReady: wantCondition{metav1.ConditionTrue, "AccountRegistered", "ACME account https://ca.example/acct/1 is registered"},
		},
		"stalled": {
			err:         stalled("InvalidAccountKey", "Secret %s/%s is broken", "ns", "key"),
			wantReady:   wantCondition{metav1.ConditionFalse, "InvalidAccountKey", "Secret ns/key is broken"},
			wantStalled: &wantCondition{metav1.ConditionTrue, "InvalidAccountKey", "Secret ns/key is broken"},
		},
		"wrapped stalled": {
			err:         fmt.Errorf("step: %w", stalled("MissingEABSecret", "no Secret")),
			wantReady:   wantCondition{metav1.ConditionFalse, "MissingEABSecret", "no Secret"},
			wantStalled: &wantCondition{metav1.ConditionTrue, "MissingEABSecret", "no Secret"},
		},
		"wait": {
			err:             wait(5*time.Second, "OrderPending", "order %s is pending", "o-1"),
			wantReady:       wantCondition{metav1.ConditionFalse, "OrderPending", "order o-1 is pending"},
			wantReconciling: &wantCondition{metav1.ConditionTrue, "OrderPending", "order o-1 is pending"},
		},
		"transient": {
			err:             transient,
			wantReady:       wantCondition{metav1.ConditionFalse, reasonError, transient.Error()},
			wantReconciling: &wantCondition{metav1.ConditionTrue, reasonError, transient.Error()},
		},
	}
	// Every case starts from conditions a previous reconcile left, so the test also shows which
	// conditions summarize removes.
	earlier := metav1.NewTime(time.Now().Add(-time.Hour))
	for name, previous := range map[string][]metav1.Condition{
		"no conditions": nil,
		"was stalled": {
			{Type: typeReady, Status: metav1.ConditionFalse, Reason: "Old", Message: "old", ObservedGeneration: 1, LastTransitionTime: earlier},
			{Type: typeStalled, Status: metav1.ConditionTrue, Reason: "Old", Message: "old", ObservedGeneration: 1, LastTransitionTime: earlier},
		},
		"was reconciling": {
			{Type: typeReady, Status: metav1.ConditionFalse, Reason: "Old", Message: "old", ObservedGeneration: 1, LastTransitionTime: earlier},
			{Type: typeReconciling, Status: metav1.ConditionTrue, Reason: "Old", Message: "old", ObservedGeneration: 1, LastTransitionTime: earlier},
		},
	} {
		for testName, tt := range tests {
			t.Run(name+"/"+testName, func(t *testing.T) {
				conditions := append([]metav1.Condition(nil), previous...)
				summarizeIssuer(&conditions, 2, tt.err, "AccountRegistered", "ACME account https://ca.example/acct/1 is registered", time.Now())

				checkCondition(t, conditions, typeReady, &tt.wantReady)
				checkCondition(t, conditions, typeReconciling, tt.wantReconciling)
				checkCondition(t, conditions, typeStalled, tt.wantStalled)
				if len(conditions) != 1+countSet(tt.wantReconciling, tt.wantStalled) {
					t.Errorf("conditions = %+v, want only Ready, Reconciling, Stalled as listed", conditions)
				}
			})
		}
	}
}

func countSet(conditions ...*wantCondition) int {
	n := 0
	for _, c := range conditions {
		if c != nil {
			n++
		}
	}
	return n
}

func checkCondition(t *testing.T, conditions []metav1.Condition, conditionType string, want *wantCondition) {
	t.Helper()
	got := meta.FindStatusCondition(conditions, conditionType)
	switch {
	case want == nil && got != nil:
		t.Errorf("%s = %+v, want absent", conditionType, *got)
	case want == nil:
	case got == nil:
		t.Errorf("%s is absent, want %+v", conditionType, *want)
	case got.Status != want.status || got.Reason != want.reason || got.Message != want.message:
		t.Errorf("%s = %s/%s/%q, want %s/%s/%q", conditionType, got.Status, got.Reason, got.Message, want.status, want.reason, want.message)
	case got.ObservedGeneration != 2:
		t.Errorf("%s observedGeneration = %d, want 2", conditionType, got.ObservedGeneration)
	case got.LastTransitionTime.IsZero():
		t.Errorf("%s has no lastTransitionTime", conditionType)
	}
}

// TestSummarizeKeepsTransitionTime: a reconcile that ends as the previous one did moves no
// lastTransitionTime, so the status patch is empty and an idle cluster writes nothing.
func TestSummarizeKeepsTransitionTime(t *testing.T) {
	for name, err := range map[string]error{
		"success":   nil,
		"stalled":   stalled("InvalidAccountKey", "broken"),
		"transient": errors.New("connection refused"),
	} {
		t.Run(name, func(t *testing.T) {
			var conditions []metav1.Condition
			summarizeIssuer(&conditions, 1, err, "AccountRegistered", "registered", time.Now())
			past := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
			for i := range conditions {
				conditions[i].LastTransitionTime = past
			}
			before := append([]metav1.Condition(nil), conditions...)
			summarizeIssuer(&conditions, 1, err, "AccountRegistered", "registered", time.Now())
			if fmt.Sprint(before) != fmt.Sprint(conditions) {
				t.Errorf("conditions changed on an identical outcome:\nbefore %+v\nafter  %+v", before, conditions)
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	transient := errors.New("connection refused")
	tests := map[string]struct {
		err        error
		wantResult ctrl.Result
		wantErr    error
	}{
		"success":         {err: nil, wantResult: ctrl.Result{}},
		"stalled":         {err: stalled("InvalidAccountKey", "broken"), wantResult: ctrl.Result{RequeueAfter: stalledRecheck}},
		"wrapped stalled": {err: fmt.Errorf("step: %w", stalled("RegistrationFailed", "refused")), wantResult: ctrl.Result{RequeueAfter: stalledRecheck}},
		"wait":            {err: wait(7*time.Second, "OrderPending", "pending"), wantResult: ctrl.Result{RequeueAfter: 7 * time.Second}},
		"wrapped wait":    {err: fmt.Errorf("step: %w", wait(time.Minute, "OrderPending", "pending")), wantResult: ctrl.Result{RequeueAfter: time.Minute}},
		"transient":       {err: transient, wantResult: ctrl.Result{}, wantErr: transient},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			result, err := resultOf(context.Background(), tt.err)
			if result != tt.wantResult {
				t.Errorf("result = %+v, want %+v", result, tt.wantResult)
			}
			if err != tt.wantErr {
				t.Errorf("error = %v, want %v (returned as is, for the rate limiter)", err, tt.wantErr)
			}
		})
	}
}

// TestIssuerKstatus: the conditions summarize writes read in kstatus as Current when Ready,
// InProgress while reconciling or before the controller saw the generation, Failed when stalled.
func TestIssuerKstatus(t *testing.T) {
	tests := map[string]struct {
		err error
		// bumpGeneration simulates a spec change the controller has not seen yet.
		bumpGeneration bool
		want           status.Status
	}{
		"ready":                 {err: nil, want: status.CurrentStatus},
		"ready, spec changed":   {err: nil, bumpGeneration: true, want: status.InProgressStatus},
		"transient error":       {err: errors.New("connection refused"), want: status.InProgressStatus},
		"waiting":               {err: wait(time.Second, "Pending", "pending"), want: status.InProgressStatus},
		"stalled":               {err: stalled("InvalidAccountKey", "broken"), want: status.FailedStatus},
		"stalled, spec changed": {err: stalled("InvalidAccountKey", "broken"), bumpGeneration: true, want: status.InProgressStatus},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			issuer := &certpilotv1alpha1.Issuer{}
			issuer.Name, issuer.Namespace, issuer.Generation = "pebble", "default", 3
			summarizeIssuer(&issuer.Status.Conditions, issuer.Generation, tt.err, "AccountRegistered", "registered", time.Now())
			issuer.Status.ObservedGeneration = issuer.Generation
			if tt.bumpGeneration {
				issuer.Generation++
			}
			if got := kstatusOf(t, issuer); got.Status != tt.want {
				t.Errorf("kstatus = %s (%s), want %s", got.Status, got.Message, tt.want)
			}
		})
	}
}
