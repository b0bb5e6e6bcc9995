package controllers

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/renewal"
)

// finalize sends the CSR, signed with a fresh private key, once every authorization is valid.
func (r *CertificateReconciler) finalize(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	if err := r.recordOrder(ctx, run); err != nil {
		return ctrl.Result{}, err
	}
	if run.order.Status == acme.StatusReady {
		key, err := r.nextPrivateKey(ctx, run)
		if err != nil {
			return ctrl.Result{}, err
		}
		csr, err := pki.CreateCSR(key, run.cert.Spec.DNSNames)
		if err != nil {
			return ctrl.Result{}, err
		}
		order, err := run.acme.Finalize(ctx, run.order, csr)
		if err != nil {
			if acme.IsPermanent(err) {
				return ctrl.Result{}, r.recordFailure(ctx, run, true, "FinalizeFailed", "%v", err)
			}
			return ctrl.Result{}, err
		}
		if order.Status == acme.StatusProcessing && order.ServerRetryAfter == 0 {
			// Most CAs issue within moments of finalization: one look now often saves a
			// requeue, and the status write that goes with it.
			if again, err := run.acme.GetOrder(ctx, order.URL); err == nil {
				order = again
			}
		}
		run.order = order
		recordOrderState(run.cert.Status.Order, order.Status)
		ctrl.LoggerFrom(ctx).Info("Finalized order", "order", order.URL, "state", order.Status)
	}
	switch run.order.Status {
	case acme.StatusValid:
		return ctrl.Result{}, nil
	case acme.StatusProcessing:
		return ctrl.Result{}, wait(acme.PollInterval(run.order.ServerRetryAfter, orderAge(run)), reasonWaitingForCertificate, "The CA is issuing the certificate")
	default:
		return ctrl.Result{}, r.recordFailure(ctx, run, false, "OrderInvalid", "the CA marked order %s %s after finalization: %s",
			run.order.URL, run.order.Status, orderProblem(ctx, run, run.order))
	}
}

// storeCertificate downloads the chain, writes the certificate Secret with server-side apply,
// removes the challenge responses and the pending key, records the result and schedules the
// renewal.
func (r *CertificateReconciler) storeCertificate(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	cert := run.cert
	// An earlier reconcile may have stored this order's certificate already and died (or been
	// read from a stale cache) before its status write: then only the status is left to do.
	stored, err := r.certificateSecret(ctx, cert, true, true)
	if err != nil {
		return ctrl.Result{}, err
	}
	if stored != nil && stored.Annotations[annotationOrder] == run.order.URL {
		leaf, err := pki.ParseLeaf(stored.Data[corev1.TLSCertKey])
		if err == nil {
			// Finish what the earlier reconcile did not: the cleanup, and the Event when no
			// status write recorded this certificate yet (it died between storing and
			// recording; stale reads of the Certificate are caught before the steps run).
			announce := run.patchBase.Status.SerialNumber != fmt.Sprintf("%x", leaf.SerialNumber)
			result := r.recordIssued(ctx, run, leaf, stored.Annotations[annotationRenewed] == "true", announce)
			if err := r.removeChallenges(ctx, run); err != nil {
				return ctrl.Result{}, err
			}
			return result, nil
		}
	}

	chain, err := run.acme.FetchCertificate(ctx, run.order.CertURL)
	if err != nil {
		return ctrl.Result{}, err
	}
	chainPEM := pki.EncodeChain(chain)
	leaf, err := pki.ParseLeaf(chainPEM)
	if err != nil {
		return ctrl.Result{}, r.recordFailure(ctx, run, false, "InvalidCertificate", "the CA returned an unreadable certificate: %v", err)
	}
	keyPEM, err := r.issuedKey(ctx, run, leaf)
	if err != nil {
		return ctrl.Result{}, err
	}

	renewed := run.secret != nil
	if err := r.applyCertificateSecret(ctx, run, keyPEM, chainPEM, pki.EncodeChain(chain[1:]), renewed); err != nil {
		return ctrl.Result{}, err
	}
	// Record and announce first: the certificate is stored, whatever the cleanup does (a failed
	// cleanup is finished by a later reconcile, guarded by the finalizer).
	result := r.recordIssued(ctx, run, leaf, renewed, true)
	if err := r.removeChallenges(ctx, run); err != nil {
		return ctrl.Result{}, err
	}
	return result, r.removeLegacyNextKey(ctx, run)
}

// recordIssued records a stored certificate in the status, announces it (Event) when it is new
// and schedules its renewal.
func (r *CertificateReconciler) recordIssued(ctx context.Context, run *certificateRun, leaf *x509.Certificate, renewed, announce bool) ctrl.Result {
	cert := run.cert
	status := &cert.Status
	// The new certificate's window, fetched now so that it lands in this reconcile's status write.
	status.RenewalInfo, status.RenewalTimeSource = nil, ""
	r.refreshRenewalInfo(ctx, run, leaf, true)
	renewalTime, source := renewalSchedule(status, leaf, renewBefore(cert))
	status.NotBefore, status.NotAfter, status.RenewalTime = timePtr(leaf.NotBefore), timePtr(leaf.NotAfter), timePtr(renewalTime)
	status.RenewalTimeSource = source
	status.SerialNumber = fmt.Sprintf("%x", leaf.SerialNumber)
	if run.patchBase.Status.SerialNumber != status.SerialNumber {
		// One more certificate stored (counted from the status as last written, so a second
		// recording of the same certificate counts it once).
		status.Revision = run.patchBase.Status.Revision + 1
	}
	status.FailedIssuanceAttempts, status.LastFailureTime, status.NextAttemptTime = 0, nil, nil
	status.Order.State = acme.StatusValid
	if len(status.Order.Challenges) == 0 {
		// The challenges were read and answered in reconciles whose progress was not written:
		// a valid order has every name validated, each by its solver's type.
		for _, name := range status.Order.DNSNames {
			if s, err := r.solverFor(run, name); err == nil {
				status.Order.Challenges = append(status.Order.Challenges, certpilotv1alpha1.ChallengeStatus{DNSName: name, Type: s.Type()})
			}
		}
	}
	for i := range status.Order.Challenges {
		status.Order.Challenges[i].State, status.Order.Challenges[i].Reason = acme.StatusValid, ""
	}
	run.ready = &metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonUpToDate,
		Message: fmt.Sprintf("Certificate is valid until %s; renewal at %s",
			leaf.NotAfter.UTC().Format(time.RFC3339), renewalTime.UTC().Format(time.RFC3339))}

	if !announce {
		return ctrl.Result{RequeueAfter: max(renewal.RequeueAfter(run.now, renewalTime), time.Second)}
	}
	reason, verb := "Issued", "issued"
	if renewed {
		reason, verb = "Renewed", "renewed"
	}
	issuances.WithLabelValues("success", reason).Inc()
	r.Recorder.Eventf(cert, nil, corev1.EventTypeNormal, reason, "Issue", "Certificate %s for %s, serial %x, valid until %s",
		verb, strings.Join(cert.Spec.DNSNames, ", "), leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
	ctrl.LoggerFrom(ctx).Info("Stored certificate", "secret", cert.Spec.SecretName, "serial", status.SerialNumber,
		"notAfter", leaf.NotAfter, "renewalTime", renewalTime)
	return ctrl.Result{RequeueAfter: max(renewal.RequeueAfter(run.now, renewalTime), time.Second)}
}

// applyCertificateSecret writes the kubernetes.io/tls Secret with server-side apply, owned by
// the Certificate.
func (r *CertificateReconciler) applyCertificateSecret(ctx context.Context, run *certificateRun, keyPEM, chainPEM, caPEM []byte, renewed bool) error {
	cert := run.cert
	secret := corev1ac.Secret(cert.Spec.SecretName, cert.Namespace).
		WithType(corev1.SecretTypeTLS).
		WithLabels(map[string]string{
			certpilotv1alpha1.LabelManagedBy:   certpilotv1alpha1.ManagedByValue,
			certpilotv1alpha1.LabelCertificate: cert.Name,
		}).
		WithAnnotations(map[string]string{
			annotationIssuerKind:  issuerKind(cert),
			annotationIssuerName:  cert.Spec.IssuerRef.Name,
			annotationOrder:       run.order.URL,
			annotationRenewed:     fmt.Sprint(renewed),
			annotationACMEServer:  run.issuer.GetSpec().ACME.Server,
			annotationACMEAccount: run.acme.AccountURI(),
		}).
		WithOwnerReferences(ownerReference(cert)).
		WithData(map[string][]byte{
			corev1.TLSCertKey:              chainPEM,
			corev1.TLSPrivateKeyKey:        keyPEM,
			corev1.ServiceAccountRootCAKey: caPEM,
			certpilotv1alpha1.BundleKey:    pki.Bundle(keyPEM, chainPEM),
		})
	if err := r.Apply(ctx, secret, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("writing Secret %s/%s: %w", cert.Namespace, cert.Spec.SecretName, err)
	}
	return nil
}

// controlledBy reports whether cert is obj's controlling owner.
func controlledBy(obj metav1.Object, cert *certpilotv1alpha1.Certificate) bool {
	owner := metav1.GetControllerOf(obj)
	return owner != nil && owner.UID == cert.UID
}

func ownerReference(cert *certpilotv1alpha1.Certificate) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(certpilotv1alpha1.GroupVersion.String()).
		WithKind("Certificate").
		WithName(cert.Name).
		WithUID(cert.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

func issuerKind(cert *certpilotv1alpha1.Certificate) string {
	if cert.Spec.IssuerRef.Kind == "" {
		return "Issuer"
	}
	return cert.Spec.IssuerRef.Kind
}
