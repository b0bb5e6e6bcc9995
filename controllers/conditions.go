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

// summarize sets Ready, Reconciling and Stalled (kstatus) from the outcome of a reconcile:
// nil means done and ready; a stalledError needs a person; a waitError or any other error means
// work is still in progress. ready is the Ready condition's reason and message on success.
func summarize(conditions *[]metav1.Condition, generation int64, err error, readyReason, readyMessage string) {
	const (
		ready       = certpilotv1alpha1.ConditionReady
		reconciling = certpilotv1alpha1.ConditionReconciling
		stalledType = certpilotv1alpha1.ConditionStalled
	)
	if err == nil {
		setCondition(conditions, generation, ready, metav1.ConditionTrue, readyReason, readyMessage)
		meta.RemoveStatusCondition(conditions, reconciling)
		meta.RemoveStatusCondition(conditions, stalledType)
		return
	}
	if s, ok := asStalled(err); ok {
		setCondition(conditions, generation, ready, metav1.ConditionFalse, s.Reason, s.Message)
		setCondition(conditions, generation, stalledType, metav1.ConditionTrue, s.Reason, s.Message)
		meta.RemoveStatusCondition(conditions, reconciling)
		return
	}
	reason, message := reasonError, err.Error()
	if w, ok := asWait(err); ok {
		reason = w.Reason
	}
	setCondition(conditions, generation, ready, metav1.ConditionFalse, reason, message)
	setCondition(conditions, generation, reconciling, metav1.ConditionTrue, reason, message)
	meta.RemoveStatusCondition(conditions, stalledType)
}
