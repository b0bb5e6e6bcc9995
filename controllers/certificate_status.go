package controllers

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// summarizeCertificate sets a Certificate's conditions from the outcome of a reconcile: ready is
// the Ready condition the decision computed from the Secret (nil when the decision did not
// run), err what the steps returned. Ready reflects the Secret (a certificate that is valid and
// matches the spec stays Ready while its renewal runs); Issuing is True while an order is open;
// Reconciling and Stalled follow kstatus. It is a pure function of its inputs: every kstatus
// consumer (Argo CD, Flux, kubectl wait) reads what it decides. now is the reconciler's clock:
// conditions that change status take it as their lastTransitionTime, which the steps read back
// (how long an order has been issuing), so that an injected clock is the only clock.
func summarizeCertificate(cert *certpilotv1alpha1.Certificate, ready *metav1.Condition, err error, now time.Time) {
	status := &cert.Status
	generation := cert.Generation
	status.ObservedGeneration = generation

	if ready != nil {
		message := ready.Message
		if w, ok := asWait(err); ok && w.Reason == "DNSRecordRequired" && ready.Status == metav1.ConditionTrue {
			// A manual renewal needs a person: say so where everyone looks.
			message += ". The renewal needs you: " + w.Message
		}
		setConditionAt(now, &status.Conditions, generation, certpilotv1alpha1.ConditionReady, ready.Status, ready.Reason, message)
	}
	issuing := orderOpen(cert)
	if s, ok := asStalled(err); ok {
		if ready == nil || ready.Status != metav1.ConditionTrue {
			setConditionAt(now, &status.Conditions, generation, certpilotv1alpha1.ConditionReady, metav1.ConditionFalse, s.Reason, s.Message)
		}
		setConditionAt(now, &status.Conditions, generation, certpilotv1alpha1.ConditionStalled, metav1.ConditionTrue, s.Reason, s.Message)
		meta.RemoveStatusCondition(&status.Conditions, certpilotv1alpha1.ConditionReconciling)
		setConditionAt(now, &status.Conditions, generation, certpilotv1alpha1.ConditionIssuing, metav1.ConditionFalse, s.Reason, s.Message)
		return
	}
	meta.RemoveStatusCondition(&status.Conditions, certpilotv1alpha1.ConditionStalled)
	if !issuing && meta.IsStatusConditionTrue(status.Conditions, certpilotv1alpha1.ConditionIssuing) {
		setConditionAt(now, &status.Conditions, generation, certpilotv1alpha1.ConditionIssuing, metav1.ConditionFalse, "Idle", "No order in progress")
	}

	if err == nil && !issuing {
		meta.RemoveStatusCondition(&status.Conditions, certpilotv1alpha1.ConditionReconciling)
		if meta.FindStatusCondition(status.Conditions, certpilotv1alpha1.ConditionIssuing) != nil {
			setConditionAt(now, &status.Conditions, generation, certpilotv1alpha1.ConditionIssuing, metav1.ConditionFalse, "Idle", "No order in progress")
		}
		return
	}
	reason, message := reasonProgressing, "Issuing the certificate"
	if err != nil {
		reason, message = reasonError, err.Error()
		if w, ok := asWait(err); ok {
			reason = w.Reason
		}
	}
	if ready == nil || ready.Status != metav1.ConditionTrue {
		setConditionAt(now, &status.Conditions, generation, certpilotv1alpha1.ConditionReady, metav1.ConditionFalse, reason, message)
	}
	setConditionAt(now, &status.Conditions, generation, certpilotv1alpha1.ConditionReconciling, metav1.ConditionTrue, reason, message)
	if issuing {
		setConditionAt(now, &status.Conditions, generation, certpilotv1alpha1.ConditionIssuing, metav1.ConditionTrue, reason, message)
	}
}
