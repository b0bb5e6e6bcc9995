package controllers

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/renewal"
)

// Annotations certpilot writes on certificate Secrets, read back by the decision.
const (
	annotationIssuerKind = "certpilot.dev/issuer-kind"
	annotationIssuerName = "certpilot.dev/issuer-name"
	// annotationOrder names the ACME order a certificate Secret (or a next-key Secret) came from.
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

// decide reads what the decision needs (the Secret, the issuer), records the current
// certificate in the status, and acts on what decideIssuance says: go on issuing, clean up what
// an earlier reconcile left, or schedule the next look at the renewal time.
func (r *CertificateReconciler) decide(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	cert := run.cert
	// While an order is open the cache is trusted for a missing Secret (storing reads the API
	// again before writing); before an order, the API is asked, so that a Secret certpilot may
	// not overwrite stops the Certificate before anything is ordered.
	secret, err := r.certificateSecret(ctx, cert, false, !orderOpen(cert))
	if err == nil && secretBehindStatus(cert, secret) {
		// The Secret cache has not seen the certificate this status records as stored: the API
		// has, and deciding on the older one would order a renewal twice.
		secret, err = r.certificateSecret(ctx, cert, true, true)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	run.secret = secret
	r.lookupSolver(ctx, run)

	in := renewalInput(run)
	renewalTime := r.recordCurrentCertificate(ctx, run, in.RenewBefore)
	in.RenewalTime = renewalTime
	in.RenewalInfoFetch = run.renewalInfoFetch
	d := decideIssuance(in, renewalTime, cert, run.patchBase.Status.ObservedGeneration)
	run.ready, run.trigger = d.ready, d.trigger
	if d.dropOrder {
		// The spec went back to what the Secret holds while an order for other names was open.
		if err := r.removeChallenges(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.abandonOrder(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	}
	if d.finishCleanup {
		// An earlier cleanup failed after the certificate was stored: finish it.
		if err := r.removeChallenges(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	}
	if d.wait != nil {
		return ctrl.Result{}, d.wait
	}
	if d.requeueAfter > 0 {
		return ctrl.Result{RequeueAfter: d.requeueAfter}, nil
	}
	if !orderOpen(cert) {
		ctrl.LoggerFrom(ctx).Info("Issuing certificate", "reason", d.trigger.Reason, "message", d.trigger.Message)
	}
	return ctrl.Result{}, nil
}

// renewalInput is what the renewal policy compares: the spec, the Secret, the clock.
func renewalInput(run *certificateRun) renewal.Input {
	cert := run.cert
	in := renewal.Input{
		Now:              run.now,
		DNSNames:         cert.Spec.DNSNames,
		IssuerKind:       cert.Spec.IssuerRef.Kind,
		IssuerName:       cert.Spec.IssuerRef.Name,
		RenewBefore:      renewBefore(cert),
		RenewalRequested: renewalRequested(cert),
	}
	if key := cert.Spec.PrivateKey; key != nil {
		in.KeyAlgorithm, in.KeySize = key.Algorithm, int(key.Size)
	}
	if run.issuer != nil {
		in.IssuerServer = run.issuer.GetSpec().ACME.Server
	}
	if secret := run.secret; secret != nil {
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

// issuanceDecision is what decideIssuance concludes.
type issuanceDecision struct {
	trigger renewal.Trigger
	// ready is the Ready condition the Secret deserves.
	ready *metav1.Condition
	// dropOrder: an open order is for other names than the spec, which the Secret matches.
	dropOrder bool
	// finishCleanup: responses of a stored certificate may still be published.
	finishCleanup bool
	// requeueAfter, when set, ends the reconcile: nothing to issue before then.
	requeueAfter time.Duration
	// wait, when set, ends the reconcile: backing off after failures.
	wait error
}

// decideIssuance is the decision as a pure function of what was read: the renewal input, the
// renewal time of the certificate in the Secret, the Certificate (its status: open order,
// failures, finalizers) and the generation the controller last saw.
func decideIssuance(in renewal.Input, renewalTime time.Time, cert *certpilotv1alpha1.Certificate, observedGeneration int64) issuanceDecision {
	trigger, issue := renewal.ShouldIssue(in)
	d := issuanceDecision{trigger: trigger}
	// A certificate that is valid stays Ready while its renewal (or its reissue from the CA the
	// issuer points to now) runs.
	stillGood := !issue || trigger.Reason == renewal.ReasonRenewalDue || trigger.Reason == renewal.ReasonRenewalRequested ||
		trigger.Reason == renewal.ReasonIssuerServerChanged
	if stillGood && cert.Status.NotAfter != nil {
		d.ready = &metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonUpToDate,
			Message: fmt.Sprintf("Certificate is valid until %s; renewal at %s",
				cert.Status.NotAfter.UTC().Format(time.RFC3339), renewalTime.UTC().Format(time.RFC3339))}
	} else {
		d.ready = &metav1.Condition{Status: metav1.ConditionFalse, Reason: trigger.Reason, Message: trigger.Message}
	}

	// The CA asked to slow down: nothing goes to it before the time it named, whatever woke
	// this reconcile (an owned Secret written just before the refused request, a restart).
	slowDown := caSlowDown(cert, in.Now)
	if !issue {
		if orderOpen(cert) && sameNames(cert.Status.Order.DNSNames, cert.Spec.DNSNames) {
			// An open order is finished even when nothing triggers now: it was opened for a
			// reason (a renewal request is marked as acted on when its order is created).
			d.wait = slowDown
			return d
		}
		d.dropOrder = orderOpen(cert)
		d.finishCleanup = !d.dropOrder && controllerutil.ContainsFinalizer(cert, challengeFinalizer)
		// Look again at the renewal time, and at notBefore and notAfter, so that Ready turns
		// True or False at those moments even when nothing else happens.
		moments := []time.Time{renewalTime}
		if cert.Status.NotBefore != nil && cert.Status.NotAfter != nil {
			moments = append(moments, cert.Status.NotBefore.Time, cert.Status.NotAfter.Time)
		}
		if !in.RenewalInfoFetch.IsZero() {
			moments = append(moments, in.RenewalInfoFetch) // the CA's window may move
		}
		next := renewal.NextEvaluation(in.Now, moments...)
		d.requeueAfter = max(renewal.RequeueAfter(in.Now, next), time.Second)
		return d
	}
	if slowDown != nil {
		d.wait = slowDown
		return d
	}
	if orderOpen(cert) {
		return d // resume the open order, whatever the backoff says
	}
	// Back off after failures (1m, 10m, 100m, then daily), unless the spec changed since.
	if attempts := cert.Status.FailedIssuanceAttempts; attempts > 0 && cert.Status.LastFailureTime != nil &&
		observedGeneration == cert.Generation && !in.RenewalRequested {
		// Never so long that a served certificate expires while a retry could still succeed.
		next := retryTime(&cert.Status, cert.Status.LastFailureTime.Time, 0)
		if in.Now.Before(next) {
			d.wait = wait(next.Sub(in.Now), "BackingOff",
				"Issuance failed %d time(s); next attempt at %s (%s)", attempts, next.UTC().Format(time.RFC3339), trigger.Message)
			if failure := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling); failure != nil &&
				failure.Status == metav1.ConditionTrue && strings.HasPrefix(failure.Message, failureMessagePrefix) {
				// The failure's own words (which name, what the CA said) stay until the retry.
				d.wait = wait(next.Sub(in.Now), failure.Reason, "%s", failure.Message)
			}
		}
	}
	return d
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

// recordCurrentCertificate copies the Secret's certificate dates and serial into the status,
// refreshes the CA's renewal window when due, and returns the renewal time (zero when there is
// no readable certificate).
func (r *CertificateReconciler) recordCurrentCertificate(ctx context.Context, run *certificateRun, renewBefore time.Duration) time.Time {
	status := &run.cert.Status
	var leaf *x509.Certificate
	if run.secret != nil {
		leaf, _ = pki.ParseLeaf(run.secret.Data[corev1.TLSCertKey])
	}
	if leaf == nil {
		status.NotBefore, status.NotAfter, status.RenewalTime, status.SerialNumber = nil, nil, nil, ""
		status.RenewalTimeSource, status.RenewalInfo = "", nil
		return time.Time{}
	}
	serial := fmt.Sprintf("%x", leaf.SerialNumber)
	if status.SerialNumber != serial {
		status.RenewalInfo = nil // another certificate's window
	}
	if !run.now.After(leaf.NotAfter) {
		r.refreshRenewalInfo(ctx, run, leaf, false)
	}
	renewalTime, source := renewalSchedule(status, leaf, renewBefore)
	status.NotBefore = timePtr(leaf.NotBefore)
	status.NotAfter = timePtr(leaf.NotAfter)
	status.RenewalTime = timePtr(renewalTime)
	status.RenewalTimeSource = source
	status.SerialNumber = serial
	return renewalTime
}

// secretBehindStatus reports whether secret (from the cache) predates the order the status
// records as stored.
func secretBehindStatus(cert *certpilotv1alpha1.Certificate, secret *corev1.Secret) bool {
	order := cert.Status.Order
	return secret != nil && order != nil && order.State == acme.StatusValid && secret.Annotations[annotationOrder] != order.URL
}

// certificateSecret returns the certificate's Secret when certpilot owns it, nil when there is
// none, and a stalled error when a Secret of that name belongs to someone else: certpilot never
// overwrites it. fresh reads from the API instead of the cache.
func (r *CertificateReconciler) certificateSecret(ctx context.Context, cert *certpilotv1alpha1.Certificate, fresh, askWhenMissing bool) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: cert.Namespace, Name: cert.Spec.SecretName}
	secret := &corev1.Secret{}
	var err error
	if fresh {
		err = r.APIReader.Get(ctx, key, secret)
	} else {
		err = r.Get(ctx, key, secret) // the cache holds only Secrets labelled as certpilot's
	}
	if apierrors.IsNotFound(err) && !fresh && askWhenMissing {
		// Not ours, or not there: ask the API, which sees every Secret.
		err = r.APIReader.Get(ctx, key, secret)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	owner := metav1.GetControllerOf(secret)
	if !kube.IsManaged(secret) ||
		(owner == nil && secret.Labels[certpilotv1alpha1.LabelCertificate] != cert.Name) {
		// Not a certificate Secret of this Certificate (an account key, a challenge Secret, or
		// someone else's).
		return nil, stalled("SecretNotOwned",
			"Secret %s/%s exists and was not created by certpilot; certpilot never overwrites it: delete it or choose another secretName",
			cert.Namespace, cert.Spec.SecretName)
	}
	if owner != nil && owner.UID != cert.UID {
		return nil, stalled("SecretOwnedByAnotherCertificate",
			"Secret %s/%s belongs to %s %q; two Certificates cannot share a secretName",
			cert.Namespace, cert.Spec.SecretName, owner.Kind, owner.Name)
	}
	return secret, nil
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
