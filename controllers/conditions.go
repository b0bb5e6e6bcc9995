package controllers

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// Reasons shared by the reconcilers' conditions.
const (
	reasonProgressing = "Progressing"
	reasonError       = "Error"
)

// setCondition sets one condition; LastTransitionTime moves only when the status changes.
func setCondition(conditions *[]metav1.Condition, generation int64, conditionType string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(conditions, metav1.Condition{
		Type: conditionType, Status: status, ObservedGeneration: generation, Reason: reason, Message: message,
	})
}

// setConditionAt is setCondition with the reconciler's clock: a status change takes now as its
// lastTransitionTime (meta.SetStatusCondition would take the machine's clock).
func setConditionAt(now time.Time, conditions *[]metav1.Condition, generation int64, conditionType string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(conditions, metav1.Condition{
		Type: conditionType, Status: status, ObservedGeneration: generation, Reason: reason, Message: message,
		LastTransitionTime: metav1.NewTime(now.Truncate(time.Second)),
	})
}

// reconcileOutcome is how a reconcile ended, as summarize shows it in the conditions.
type reconcileOutcome struct {
	// ready is the Ready condition the object deserves as observed, nil when none was decided
	// (Ready then follows err). A Ready=True stays while err reports a failure: a Certificate's
	// valid certificate is served while its renewal fails.
	ready *metav1.Condition
	// err is what the steps returned: nil (done), a stalledError (a person must act), a
	// waitError or any other error (work in progress).
	err error
	// issuing: work is under way even without an error (a Certificate's open order).
	issuing bool
	// tracksIssuing: the object shows issuing in an Issuing condition (Certificates).
	tracksIssuing bool
}

// summarize sets Ready, Reconciling and Stalled (kstatus) and, when tracked, Issuing from the
// outcome of a reconcile, for every kind: done (no error, nothing under way) removes
// Reconciling and Stalled; a stalledError sets Stalled (Ready False unless it holds); a wait or
// another error, or work under way, sets Reconciling with its reason (Ready False unless it
// holds). Conditions that change status take now as their lastTransitionTime, so that an
// injected clock is the only clock.
func summarize(conditions *[]metav1.Condition, generation int64, now time.Time, o reconcileOutcome) {
	const (
		ready       = certpilotv1alpha1.ConditionReady
		reconciling = certpilotv1alpha1.ConditionReconciling
		stalledType = certpilotv1alpha1.ConditionStalled
		issuingType = certpilotv1alpha1.ConditionIssuing
	)
	set := func(conditionType string, status metav1.ConditionStatus, reason, message string) {
		setConditionAt(now, conditions, generation, conditionType, status, reason, message)
	}
	readyHolds := o.ready != nil && o.ready.Status == metav1.ConditionTrue
	if o.ready != nil {
		set(ready, o.ready.Status, o.ready.Reason, o.ready.Message)
	}
	if s, ok := asStalled(o.err); ok {
		if !readyHolds {
			set(ready, metav1.ConditionFalse, s.Reason, s.Message)
		}
		set(stalledType, metav1.ConditionTrue, s.Reason, s.Message)
		meta.RemoveStatusCondition(conditions, reconciling)
		if o.tracksIssuing {
			set(issuingType, metav1.ConditionFalse, s.Reason, s.Message)
		}
		return
	}
	meta.RemoveStatusCondition(conditions, stalledType)
	if o.tracksIssuing && !o.issuing && meta.FindStatusCondition(*conditions, issuingType) != nil &&
		(o.err == nil || meta.IsStatusConditionTrue(*conditions, issuingType)) {
		set(issuingType, metav1.ConditionFalse, "Idle", "No order in progress")
	}
	if o.err == nil && !o.issuing {
		meta.RemoveStatusCondition(conditions, reconciling)
		return
	}
	reason, message := reasonProgressing, "Issuing the certificate"
	if o.err != nil {
		reason, message = reasonError, o.err.Error()
		if w, ok := asWait(o.err); ok {
			reason = w.Reason
		}
	}
	if !readyHolds {
		set(ready, metav1.ConditionFalse, reason, message)
	}
	set(reconciling, metav1.ConditionTrue, reason, message)
	if o.tracksIssuing && o.issuing {
		set(issuingType, metav1.ConditionTrue, reason, message)
	}
}

// summarizeIssuer sets an issuer's conditions from the outcome of its reconcile: Ready with
// readyReason and readyMessage when it succeeded, else what err says.
func summarizeIssuer(conditions *[]metav1.Condition, generation int64, err error, readyReason, readyMessage string, now time.Time) {
	o := reconcileOutcome{err: err}
	if err == nil {
		o.ready = &metav1.Condition{Status: metav1.ConditionTrue, Reason: readyReason, Message: readyMessage}
	}
	summarize(conditions, generation, now, o)
}
