package controllers

import (
	"time"

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
	cert.Status.ObservedGeneration = cert.Generation
	if w, ok := asWait(err); ok && w.Reason == "DNSRecordRequired" && ready != nil && ready.Status == metav1.ConditionTrue {
		// A manual renewal needs a person: say so where everyone looks.
		withMessage := *ready
		withMessage.Message += ". The renewal needs you: " + w.Message
		ready = &withMessage
	}
	summarize(&cert.Status.Conditions, cert.Generation, now, reconcileOutcome{ready: ready, err: err, issuing: orderOpen(cert), tracksIssuing: true})
}
