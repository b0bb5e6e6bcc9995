package controllers

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/renewal"
)

// secretStore reads and writes the certificate Secret: it stores an issued certificate with its
// key, records it in the status, and keeps the Secret's template.
type secretStore struct {
	client    client.Client
	apiReader client.Reader
	// names answers whether a Secret the cache leaves out exists (nil: ask the API).
	names       *kube.SecretNames
	recorder    recorder.EventRecorder
	claims      claimStore
	challenges  *challengeSteps
	renewalInfo renewalInfoSteps
	failures    failureReporter
	// written remembers the Secrets this store created, so that their watch events (which
	// tell the Certificate nothing new) do not wake it.
	written *ownWrites
	// announced remembers the certificates announced whose status write may not have landed.
	announced *announcements
}

// announcements remember, per Certificate, the certificate last announced (its Issued or Renewed
// Event): a status write refused after the store (a conflict) leaves the status without it, and
// the reconcile that records it again must not announce it twice. Its zero value is ready to use.
type announcements struct{ serials sync.Map }

type announcement struct {
	uid    types.UID
	serial string
}

// done reports whether cert's certificate serial was announced already.
func (a *announcements) done(cert *certpilotv1alpha1.Certificate, serial string) bool {
	last, ok := a.serials.Load(client.ObjectKeyFromObject(cert))
	return ok && last.(announcement) == announcement{uid: cert.UID, serial: serial}
}

func (a *announcements) remember(cert *certpilotv1alpha1.Certificate, serial string) {
	a.serials.Store(client.ObjectKeyFromObject(cert), announcement{uid: cert.UID, serial: serial})
}

// forget drops what is remembered of a Certificate (gone, or its status records its certificate).
func (a *announcements) forget(key types.NamespacedName) { a.serials.Delete(key) }

// storeCertificate downloads the chain, writes the certificate Secret, removes the challenge
// responses, records the result and schedules the renewal.
//
// The Secret as the cache holds it decides how it is written, with no read of the API: none
// means a create (AlreadyExists if anyone made one since), a Secret of this Certificate means an
// apply carrying its resourceVersion (Conflict if it changed since). Either refusal reads the
// API once and decides again, so a foreign Secret is never written over, and a certificate an
// earlier reconcile stored and did not record (it died, or the cache lags) is recorded, not
// stored twice.
func (s *secretStore) storeCertificate(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	cert := run.cert
	stored, err := s.certificateSecret(ctx, cert, false, false)
	if err != nil {
		return ctrl.Result{}, err
	}
	var leaf *x509.Certificate
	var keyPEM, chainPEM, caPEM []byte
	var window func(context.Context, *certificateRun) // the prefetched renewal window of leaf
	for attempt := 0; ; attempt++ {
		if stored != nil && stored.Annotations[annotationOrder] == run.order.URL {
			if storedLeaf, err := pki.ParseLeaf(stored.Data[corev1.TLSCertKey]); err == nil {
				if leaf != nil && !storedLeaf.Equal(leaf) {
					window = nil // prefetched for another certificate
				}
				return s.recordStored(ctx, run, stored, storedLeaf, window)
			}
		}
		if leaf == nil {
			chain, err := run.acme.FetchCertificate(ctx, run.order.CertURL)
			if err != nil {
				return ctrl.Result{}, err
			}
			chainPEM, caPEM = pki.EncodeChain(chain), pki.EncodeChain(chain[1:])
			if leaf, err = pki.ParseLeaf(chainPEM); err != nil {
				return ctrl.Result{}, s.failures.recordFailure(ctx, run, false, "InvalidCertificate", "the CA returned an unreadable certificate: %v", err)
			}
			if keyPEM, err = s.issuedKey(ctx, run, leaf); err != nil {
				return ctrl.Result{}, err
			}
			// The new certificate's window goes out beside the Secret's write.
			window = s.renewalInfo.prefetch(ctx, run, run.issuer, leaf)
		}
		err := s.writeCertificateSecret(ctx, run, stored, keyPEM, chainPEM, caPEM, run.observed.secret != nil)
		if err == nil {
			break
		}
		if attempt > 0 || !(apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err)) {
			return ctrl.Result{}, fmt.Errorf("writing Secret %s/%s: %w", cert.Namespace, cert.Spec.SecretName, err)
		}
		if stored, err = s.certificateSecret(ctx, cert, true, true); err != nil {
			return ctrl.Result{}, err
		}
	}
	renewed := run.observed.secret != nil
	// Record and announce first: the certificate is stored, whatever the cleanup does. The
	// challenge responses go after the status write that records it (removeAfterStatus), so
	// Ready waits for no cleanup; a failed cleanup is marked in the status and finished by a
	// later reconcile.
	result := s.recordIssued(ctx, run, leaf, renewed, true, window)
	if ready := keystoresNotReady(run); ready != nil {
		run.ready = ready // stored without a keystore whose password is missing (certificate_keystores.go)
	}
	run.removeAfterStatus = true
	return result, nil
}

// recordStored finishes what an earlier reconcile did not after it stored this order's
// certificate: the cleanup, and the Event when no status write recorded the certificate yet (it
// died between storing and recording; stale reads of the Certificate are caught before the steps
// run).
func (s *secretStore) recordStored(ctx context.Context, run *certificateRun, stored *corev1.Secret, leaf *x509.Certificate,
	window func(context.Context, *certificateRun)) (ctrl.Result, error) {
	announce := run.patchBase.Status.SerialNumber != fmt.Sprintf("%x", leaf.SerialNumber)
	result := s.recordIssued(ctx, run, leaf, stored.Annotations[annotationRenewed] == "true", announce, window)
	run.removeAfterStatus = true
	return result, nil
}

// recordIssued records a stored certificate in the status, announces it (Event) when it is new
// and schedules its renewal.
func (s *secretStore) recordIssued(ctx context.Context, run *certificateRun, leaf *x509.Certificate, renewed, announce bool,
	window func(context.Context, *certificateRun)) ctrl.Result {
	cert := run.cert
	status := &cert.Status
	// The new certificate's window, fetched now (or by the prefetch window) so that it lands in
	// this reconcile's status write.
	status.RenewalInfo, status.RenewalTimeSource = nil, ""
	if window != nil {
		window(ctx, run)
	} else {
		s.renewalInfo.refreshRenewalInfo(ctx, run, run.issuer, leaf)
	}
	renewalTime, source := renewalSchedule(status, leaf, renewBefore(cert))
	status.NotBefore, status.NotAfter, status.RenewalTime = timePtr(leaf.NotBefore), timePtr(leaf.NotAfter), timePtr(renewalTime)
	status.RenewalTimeSource = source
	status.SerialNumber = fmt.Sprintf("%x", leaf.SerialNumber)
	if run.patchBase.Status.SerialNumber != status.SerialNumber {
		// One more certificate stored (counted from the status as last written, so a second
		// recording of the same certificate counts it once).
		status.Revision = run.patchBase.Status.Revision + 1
	}
	status.FailedIssuanceAttempts, status.LastFailureTime, status.LastFailureReason, status.NextAttemptTime = 0, nil, "", nil
	recordIssuedBy(run)
	status.Order.State = acme.StatusValid
	if len(status.Order.Challenges) == 0 {
		// The challenges were read and answered in reconciles whose progress was not written:
		// a valid order has every name validated, each by its solver's type.
		status.Order.Challenges = s.challenges.challengesByName(run, acme.StatusValid)
	}
	for i := range status.Order.Challenges {
		status.Order.Challenges[i].State, status.Order.Challenges[i].Reason = acme.StatusValid, ""
	}
	run.ready = &metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonUpToDate,
		Message: validUntil(leaf.NotAfter, renewalTime)}

	if !announce || s.announced.done(cert, status.SerialNumber) {
		if !announce {
			s.announced.forget(client.ObjectKeyFromObject(cert)) // the status records it
		}
		return ctrl.Result{RequeueAfter: max(renewal.RequeueAfter(run.now, renewalTime), time.Second)}
	}
	reason, verb := "Issued", "issued"
	if renewed {
		reason, verb = "Renewed", "renewed"
	}
	issuances.WithLabelValues("success", reason).Inc()
	s.recorder.Eventf(cert, nil, corev1.EventTypeNormal, reason, "Issue", "Certificate %s for %s, serial %x, valid until %s",
		verb, strings.Join(cert.Spec.Identifiers(), ", "), leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
	s.announced.remember(cert, status.SerialNumber)
	ctrl.LoggerFrom(ctx).Info("Stored certificate", "secret", cert.Spec.SecretName, "serial", status.SerialNumber,
		"notAfter", leaf.NotAfter, "renewalTime", renewalTime)
	return ctrl.Result{RequeueAfter: max(renewal.RequeueAfter(run.now, renewalTime), time.Second)}
}

// writeCertificateSecret writes the kubernetes.io/tls Secret, owned by the Certificate: a create
// when existing is nil, else a server-side apply that carries existing's resourceVersion.
func (s *secretStore) writeCertificateSecret(ctx context.Context, run *certificateRun, existing *corev1.Secret, keyPEM, chainPEM, caPEM []byte, renewed bool) error {
	cert := run.cert
	labels := map[string]string{
		certpilotv1alpha1.LabelManagedBy:   certpilotv1alpha1.ManagedByValue,
		certpilotv1alpha1.LabelCertificate: cert.Name,
	}
	annotations := map[string]string{
		annotationIssuerKind:  run.issuer.Kind(),
		annotationIssuerName:  run.issuer.GetName(),
		annotationOrder:       run.order.URL,
		annotationRenewed:     fmt.Sprint(renewed),
		annotationACMEServer:  run.issuer.GetSpec().ACME.Server,
		annotationACMEAccount: run.acme.AccountURI(),
	}
	template := templateOf(cert)
	labels, annotations = template.withTemplate(labels, annotations)
	data := map[string][]byte{
		corev1.TLSCertKey:              chainPEM,
		corev1.TLSPrivateKeyKey:        keyPEM,
		corev1.ServiceAccountRootCAKey: caPEM,
		certpilotv1alpha1.BundleKey:    pki.Bundle(keyPEM, chainPEM),
	}
	if err := addOutputs(run, existing, data); err != nil {
		return err
	}
	if existing == nil {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: cert.Spec.SecretName, Namespace: cert.Namespace, Labels: labels, Annotations: annotations,
				OwnerReferences: []metav1.OwnerReference{*ownerReferenceOf(cert)},
			},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}
		if err := s.client.Create(ctx, secret, client.FieldOwner(FieldManager)); err != nil {
			return err
		}
		s.written.remember(secret)
		return nil
	}
	secret := corev1ac.Secret(cert.Spec.SecretName, cert.Namespace).
		WithResourceVersion(existing.ResourceVersion).
		WithType(corev1.SecretTypeTLS).
		WithLabels(labels).
		WithAnnotations(annotations).
		WithOwnerReferences(ownerReference(cert)).
		WithData(data)
	return s.client.Apply(ctx, secret, client.FieldOwner(FieldManager), client.ForceOwnership)
}

// controlledBy reports whether cert is obj's controlling owner.
func controlledBy(obj metav1.Object, cert *certpilotv1alpha1.Certificate) bool {
	owner := metav1.GetControllerOf(obj)
	return owner != nil && owner.UID == cert.UID
}

// ownerReferenceOf is the controlling owner reference to cert that certpilot's Secrets carry.
func ownerReferenceOf(cert *certpilotv1alpha1.Certificate) *metav1.OwnerReference {
	return &metav1.OwnerReference{
		APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate", Name: cert.Name, UID: cert.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}
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
	return cert.Spec.IssuerRef.KindOrDefault()
}

// certificateSecret returns the certificate's Secret when certpilot owns it, nil when there is
// none, and a stalled error when a Secret of that name belongs to someone else: certpilot never
// overwrites it. fresh reads from the API instead of the cache.
func (s *secretStore) certificateSecret(ctx context.Context, cert *certpilotv1alpha1.Certificate, fresh, askWhenMissing bool) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: cert.Namespace, Name: cert.Spec.SecretName}
	secret := &corev1.Secret{}
	var err error
	if fresh {
		err = s.apiReader.Get(ctx, key, secret)
	} else {
		err = s.client.Get(ctx, key, secret) // the cache holds only Secrets labelled as certpilot's
	}
	if apierrors.IsNotFound(err) && !fresh && askWhenMissing {
		// Not ours, or not there: a Secret that is not certpilot's is read from the API (its
		// watch cache: the create that follows fails if a Secret of that name appeared since).
		err = kube.LookUpSecret(ctx, s.names, s.apiReader, key, secret)
	} else if err == nil && !fresh && !kube.ControlledByCertificate(secret) {
		// The cache keeps only metadata of a Secret no Certificate controls.
		secret = &corev1.Secret{}
		err = s.apiReader.Get(ctx, key, secret, kube.FromWatchCache)
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
