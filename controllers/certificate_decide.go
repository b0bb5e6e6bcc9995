package controllers

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/budget"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/renewal"
)

// Annotations certpilot writes on certificate Secrets, read back by the decision.
const (
	annotationIssuerKind = "certpilot.dev/issuer-kind"
	annotationIssuerName = "certpilot.dev/issuer-name"
	// annotationOrder names the ACME order a certificate Secret came from.
	annotationOrder = "certpilot.dev/order"
	// annotationRenewed is "true" on a certificate Secret whose certificate replaced another.
	annotationRenewed = "certpilot.dev/renewed"
	// annotationACMEServer and annotationACMEAccount record the ACME directory and account a
	// certificate came from: an issuer that points elsewhere later reissues it.
	annotationACMEServer  = "certpilot.dev/acme-server"
	annotationACMEAccount = "certpilot.dev/acme-account"
)

// Ready reasons of a Certificate.
const (
	reasonUpToDate = "UpToDate"
)

// decide observes (the Secret, the issuer), decides (decideIssuance, pure), and acts on the
// decision: fetch the CA's renewal window when it is due (and decide again on it), record the
// current certificate in the status, write a changed secretTemplate and the keystores and
// other formats the spec asks for (decideOutputs) into the Secret in one patch, clean up
// what an earlier reconcile left, and go on issuing or schedule the next look.
func (r *CertificateReconciler) decide(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	if err := r.observe(ctx, run); err != nil {
		return ctrl.Result{}, err
	}
	d := decideIssuance(r.decisionInputOf(run))
	recordCurrent(&run.cert.Status, d.current)
	if d.fetchRenewalInfo {
		r.parts().renewalInfo.refreshRenewalInfo(ctx, run, run.observed.servedIssuer, run.observed.leaf)
		d = decideIssuance(r.decisionInputOf(run))
		recordCurrent(&run.cert.Status, d.current)
	}
	run.ready, run.trigger = d.ready, d.trigger
	if d.forgetFailures {
		status := &run.cert.Status
		status.FailedIssuanceAttempts, status.LastFailureTime, status.LastFailureReason = 0, nil, ""
	}
	outputs, err := decideOutputs(run.cert, run.observed.secret, run.observed.passwords, d)
	if err != nil {
		return ctrl.Result{}, err
	}
	if patch := withOutputs(d.secretTemplate, run.observed.secret, outputs.patch); patch != nil {
		if err := r.parts().store.syncSecretTemplate(ctx, run, patch, d.secretTemplateRefused, outputs.written); err != nil {
			return ctrl.Result{}, err
		}
	}
	if d.dropOrder {
		// The spec went back to what the Secret holds while an order for other names was open.
		if err := r.parts().challenges.removeChallenges(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.parts().records.abandonOrder(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	}
	if d.finishCleanup {
		// An earlier cleanup failed after its order ended: finish it. Before a new order, a
		// cleanup that fails again does not hold the issuance (a certificate must not expire
		// for records at a DNS server that is down); the new order's status no longer records them.
		if err := r.parts().challenges.removeChallenges(ctx, run); err != nil {
			if d.requeueAfter > 0 {
				return ctrl.Result{}, err
			}
			ctrl.LoggerFrom(ctx).Error(err, "Removing the challenge responses of the last order failed; ordering anyway")
		}
	}
	if d.dropFinalizer {
		if err := kube.SetFinalizer(ctx, r.Client, run.cert, challengeFinalizer, false); err != nil {
			return ctrl.Result{}, err
		}
	}
	if outputs.stall != nil {
		run.ready = outputs.ready
		return ctrl.Result{}, outputs.stall
	}
	if d.wait != nil {
		return ctrl.Result{}, d.wait
	}
	if d.requeueAfter > 0 {
		return ctrl.Result{RequeueAfter: d.requeueAfter}, nil
	}
	if !orderOpen(run.cert) {
		ctrl.LoggerFrom(ctx).Info("Issuing certificate", "reason", d.trigger.Reason, "message", d.trigger.Message)
	}
	return ctrl.Result{}, nil
}

// decisionInput is everything decideIssuance reads: what observe read, the Certificate as read
// (with the status this reconcile built so far), and the clock.
type decisionInput struct {
	now  time.Time
	cert *certpilotv1alpha1.Certificate
	// observedGeneration is the generation the last written status saw.
	observedGeneration int64
	secret             *corev1.Secret
	leaf               *x509.Certificate
	// issuer is the issuer of the served certificate (observed.servedIssuer).
	issuer certpilotv1alpha1.GenericIssuer
	// renewalInfoDue is when the CA's renewal window of leaf is fetched next (zero: now).
	renewalInfoDue time.Time
	// finalizerNeeded: a solver of the Certificate's names needs challengeFinalizer, or a
	// name's solver is not known now.
	finalizerNeeded bool
}

// decisionInputOf is the decision's input of this reconcile.
func (r *CertificateReconciler) decisionInputOf(run *certificateRun) decisionInput {
	in := decisionInput{now: run.now, cert: run.cert, observedGeneration: run.patchBase.Status.ObservedGeneration,
		secret: run.observed.secret, leaf: run.observed.leaf, issuer: run.observed.servedIssuer,
		finalizerNeeded: r.parts().challenges.finalizerNeeded(run)}
	if in.leaf != nil {
		if serial := fmt.Sprintf("%x", in.leaf.SerialNumber); run.cert.Status.SerialNumber == serial {
			in.renewalInfoDue = r.renewalInfoFetches.due(run.cert, serial)
		}
	}
	return in
}

// renewalInput is what the renewal policy compares: the spec, the Secret, the clock. The issuer
// it compares the Secret with is the one that issued it when that is one of the Certificate's
// issuers (servedIssuerRef), with the server of issuer.
func renewalInput(now time.Time, cert *certpilotv1alpha1.Certificate, issuer certpilotv1alpha1.GenericIssuer, secret *corev1.Secret) renewal.Input {
	ref := servedIssuerRef(cert, secret)
	in := renewal.Input{
		Now:              now,
		DNSNames:         cert.Spec.Identifiers(),
		IssuerKind:       ref.Kind,
		IssuerName:       ref.Name,
		RenewBefore:      renewBefore(cert),
		RenewalRequested: renewalRequested(cert),
	}
	if key := cert.Spec.PrivateKey; key != nil {
		in.KeyAlgorithm, in.KeySize = key.Algorithm, int(key.Size)
	}
	if issuer != nil {
		in.IssuerServer = issuer.GetSpec().ACME.Server
	}
	if secret != nil {
		in.Secret = &renewal.Secret{
			CertificatePEM: secret.Data[corev1.TLSCertKey],
			PrivateKeyPEM:  secret.Data[corev1.TLSPrivateKeyKey],
			IssuerKind:     secret.Annotations[annotationIssuerKind],
			IssuerName:     secret.Annotations[annotationIssuerName],
			IssuerServer:   secret.Annotations[annotationACMEServer],
			IssuerAccount:  secret.Annotations[annotationACMEAccount],
		}
	}
	return in
}

// currentCertificate is what the status records of the certificate the Secret holds.
type currentCertificate struct {
	// leaf is nil when the Secret holds no readable certificate: the status records none.
	leaf              *x509.Certificate
	renewalTime       time.Time
	renewalTimeSource string
	// keepRenewalInfo: the status's renewal window is this certificate's and the issuer uses ARI.
	keepRenewalInfo bool
	// issuedBy is the issuer the Secret records as the certificate's (nil: none recorded).
	issuedBy *certpilotv1alpha1.IssuerReference
}

// issuanceDecision is what decideIssuance concludes.
type issuanceDecision struct {
	trigger renewal.Trigger
	// ready is the Ready condition the Secret deserves.
	ready *metav1.Condition
	// current is what the status records of the served certificate.
	current currentCertificate
	// fetchRenewalInfo: the CA's renewal window of the served certificate is due; fetch it and
	// decide again.
	fetchRenewalInfo bool
	// secretTemplate, when set, is the merge patch that brings the Secret's metadata to
	// spec.secretTemplate; secretTemplateRefused the template's entries left out of it.
	secretTemplate        map[string]any
	secretTemplateRefused []string
	// dropOrder: an open order is for other names than the spec, which the Secret matches.
	dropOrder bool
	// forgetFailures: the recorded failures no longer count (a spec change long after them).
	forgetFailures bool
	// finishCleanup: responses of an order that ended may still be published (cleanupPending):
	// at rest, and before a new order.
	finishCleanup bool
	// dropFinalizer: no solver needs challengeFinalizer any more and no response is left.
	dropFinalizer bool
	// requeueAfter, when set, ends the reconcile: nothing to issue before then.
	requeueAfter time.Duration
	// wait, when set, ends the reconcile: backing off after failures.
	wait error
}

// decideIssuance is the decision as a pure function of what was observed and the clock: when the
// served certificate renews, whether the CA's renewal window is due, whether to issue (and why),
// and what to do instead.
func decideIssuance(in decisionInput) issuanceDecision {
	cert := in.cert
	var d issuanceDecision
	ari := in.issuer != nil && !in.issuer.GetSpec().ACME.DisableRenewalInfo
	var renewalTime time.Time
	if leaf := in.leaf; leaf != nil {
		status := cert.Status
		sameCertificate := status.SerialNumber == fmt.Sprintf("%x", leaf.SerialNumber)
		if !sameCertificate || !ari {
			status.RenewalInfo, status.RenewalTimeSource = nil, ""
		}
		renewalTime, d.current.renewalTimeSource = renewalSchedule(&status, leaf, renewBefore(cert))
		d.current.leaf, d.current.renewalTime = leaf, renewalTime
		d.current.keepRenewalInfo = sameCertificate && ari
		d.fetchRenewalInfo = ari && !in.now.After(leaf.NotAfter) && (in.renewalInfoDue.IsZero() || !in.now.Before(in.renewalInfoDue))
		d.current.issuedBy = recordedIssuer(in.secret)
	}
	if in.secret != nil {
		template := templateOf(cert)
		d.secretTemplate, d.secretTemplateRefused = templatePatch(in.secret, template), template.refused
	}
	renewalIn := renewalInput(in.now, cert, in.issuer, in.secret)
	renewalIn.RenewalTime = renewalTime
	trigger, issue := renewal.ShouldIssue(renewalIn)
	d.trigger = trigger
	// A certificate that is valid stays Ready while its renewal (or its reissue from the CA the
	// issuer points to now) runs.
	stillGood := !issue || trigger.Reason == renewal.ReasonRenewalDue || trigger.Reason == renewal.ReasonRenewalRequested ||
		trigger.Reason == renewal.ReasonIssuerServerChanged
	if stillGood && in.leaf != nil {
		d.ready = &metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonUpToDate, Message: validUntil(in.leaf.NotAfter, renewalTime)}
	} else {
		d.ready = &metav1.Condition{Status: metav1.ConditionFalse, Reason: trigger.Reason, Message: trigger.Message}
	}

	// The CA asked to slow down: nothing goes to it before the time it named, whatever woke
	// this reconcile (an owned Secret written just before the refused request, a restart).
	slowDown := caSlowDown(cert, in.now)
	if !issue {
		if orderOpen(cert) && sameNames(cert.Status.Order.Identifiers(), cert.Spec.Identifiers()) {
			// An open order is finished even when nothing triggers now: it was opened for a
			// reason (a renewal request is marked as acted on when its order is created).
			d.wait = slowDown
			return d
		}
		d.dropOrder = orderOpen(cert)
		d.finishCleanup = !d.dropOrder && cleanupPending(&cert.Status)
		d.dropFinalizer = !d.dropOrder && !d.finishCleanup && !in.finalizerNeeded &&
			controllerutil.ContainsFinalizer(cert, challengeFinalizer)
		// Look again at the renewal time, and at notBefore and notAfter, so that Ready turns
		// True or False at those moments even when nothing else happens.
		moments := []time.Time{renewalTime}
		if leaf := in.leaf; leaf != nil {
			moments = append(moments, leaf.NotBefore.Truncate(time.Second), leaf.NotAfter.Truncate(time.Second))
		}
		if ari && !in.renewalInfoDue.IsZero() {
			moments = append(moments, in.renewalInfoDue) // the CA's window may move
		}
		next := renewal.NextEvaluation(in.now, moments...)
		d.requeueAfter = max(renewal.RequeueAfter(in.now, next), time.Second)
		return d
	}
	if slowDown != nil {
		d.wait = slowDown
		return d
	}
	if orderOpen(cert) {
		return d // resume the open order, whatever the backoff says
	}
	// Back off after failures (1m, 10m, 100m, then daily). A change of the spec or the renew
	// annotation lifts the backoff of a failure the spec caused, not of one the CA decided
	// (budget.Retry): editing a Certificate over and over does not spend the shared account.
	if attempts := cert.Status.FailedIssuanceAttempts; attempts > 0 && cert.Status.LastFailureTime != nil &&
		!movedOnUntried(cert) {
		// Never so long that a served certificate expires while a retry could still succeed.
		status := cert.Status
		status.NotAfter = nil
		if in.leaf != nil {
			status.NotAfter = timePtr(in.leaf.NotAfter)
		}
		next := retryTime(&status, cert.Status.LastFailureTime.Time, 0)
		retry := budget.Retry(budget.RetryInput{Now: in.now, Attempts: attempts, LastFailure: cert.Status.LastFailureTime.Time,
			LastReason: cert.Status.LastFailureReason, BackoffEnds: next,
			SpecChanged: in.observedGeneration != cert.Generation || renewalIn.RenewalRequested})
		d.forgetFailures = retry.Forget
		if retry.Wait {
			d.wait = wait(next.Sub(in.now), "BackingOff",
				"Issuance failed %d time(s); next attempt at %s (%s)", attempts, next.UTC().Format(time.RFC3339), trigger.Message)
			if failure := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling); failure != nil &&
				failure.Status == metav1.ConditionTrue && strings.HasPrefix(failure.Message, failureMessagePrefix) {
				// The failure's own words (which name, what the CA said) stay until the retry.
				d.wait = wait(next.Sub(in.now), failure.Reason, "%s", failure.Message)
			}
			if retry.Kept {
				w, _ := asWait(d.wait)
				if !strings.HasSuffix(w.Message, backoffKept) {
					w.Message += backoffKept
				}
			}
		}
	}
	// The responses of the last order go before the next order replaces it in the status (and
	// with it the record of what to remove).
	d.finishCleanup = d.wait == nil && cleanupPending(&cert.Status)
	return d
}

// backoffKept ends the message of a backoff that a change of the spec or the renew annotation
// did not lift (budget.Retry).
const backoffKept = " (the CA decided this failure: a change of the spec or the renew annotation does not shorten the wait)"

// recordCurrent records the served certificate in the status: its dates, serial and renewal
// time, or nothing when there is none.
func recordCurrent(status *certpilotv1alpha1.CertificateStatus, current currentCertificate) {
	leaf := current.leaf
	if leaf == nil {
		status.NotBefore, status.NotAfter, status.RenewalTime, status.SerialNumber = nil, nil, nil, ""
		status.RenewalTimeSource, status.RenewalInfo, status.IssuerRef = "", nil, nil
		return
	}
	status.IssuerRef = current.issuedBy
	if !current.keepRenewalInfo {
		status.RenewalInfo = nil
	}
	status.NotBefore = timePtr(leaf.NotBefore)
	status.NotAfter = timePtr(leaf.NotAfter)
	status.RenewalTime = timePtr(current.renewalTime)
	status.RenewalTimeSource = current.renewalTimeSource
	status.SerialNumber = fmt.Sprintf("%x", leaf.SerialNumber)
}

// validUntil is the Ready message of a valid certificate.
func validUntil(notAfter, renewalTime time.Time) string {
	return fmt.Sprintf("Certificate is valid until %s; renewal at %s",
		notAfter.UTC().Format(time.RFC3339), renewalTime.UTC().Format(time.RFC3339))
}

// caSlowDown is the wait until status.nextAttemptTime, when the CA asked to slow down and that
// time has not come; nil otherwise.
func caSlowDown(cert *certpilotv1alpha1.Certificate, now time.Time) error {
	next := cert.Status.NextAttemptTime
	if next == nil || !now.Before(next.Time) {
		return nil
	}
	return wait(next.Sub(now), "CASlowDown", "The CA asked to slow down (attempt %d); next attempt at %s",
		cert.Status.FailedIssuanceAttempts, next.UTC().Format(time.RFC3339))
}

// secretBehindStatus reports whether secret (from the cache) predates the order the status
// records as stored.
func secretBehindStatus(cert *certpilotv1alpha1.Certificate, secret *corev1.Secret) bool {
	order := cert.Status.Order
	return secret != nil && order != nil && order.State == acme.StatusValid && secret.Annotations[annotationOrder] != order.URL
}

func renewBefore(cert *certpilotv1alpha1.Certificate) time.Duration {
	if cert.Spec.RenewBefore == nil {
		return renewal.DefaultRenewBefore
	}
	return cert.Spec.RenewBefore.Duration
}

// retryTime is when issuance may be tried again after the status's failures, the last at
// lastFailure (renewal.RetryTime: the backoff, at least serverRetryAfter, never so late that the
// served certificate expires first).
func retryTime(status *certpilotv1alpha1.CertificateStatus, lastFailure time.Time, serverRetryAfter time.Duration) time.Time {
	var notAfter time.Time
	if status.NotAfter != nil {
		notAfter = status.NotAfter.Time
	}
	return renewal.RetryTime(lastFailure, status.FailedIssuanceAttempts, serverRetryAfter, notAfter)
}

// renewalRequested is true when the renew annotation holds a value not yet acted on.
func renewalRequested(cert *certpilotv1alpha1.Certificate) bool {
	value := strings.TrimSpace(cert.Annotations[certpilotv1alpha1.AnnotationRenew])
	return value != "" && value != cert.Status.RenewalRequest
}

// orderOpen is true while the status records an order that has not ended.
func orderOpen(cert *certpilotv1alpha1.Certificate) bool {
	order := cert.Status.Order
	return order != nil && order.State != "valid" && order.State != "invalid"
}

func timePtr(t time.Time) *metav1.Time {
	value := metav1.NewTime(t.Truncate(time.Second))
	return &value
}
