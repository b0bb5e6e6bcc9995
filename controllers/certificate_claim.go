package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
)

// annotationClaimOf is set on a claim Secret: the secretName it reserves.
const annotationClaimOf = "certpilot.dev/claim-of"

// claimSecretName is the name of the Secret that reserves secretName for one Certificate:
// "<secretName>-certpilot-claim", shortened with a hash when that would pass the 253 characters
// a Secret name may have.
func claimSecretName(secretName string) string {
	name := secretName + certpilotv1alpha1.ClaimSecretSuffix
	if len(name) <= 253 {
		return name
	}
	sum := sha256.Sum256([]byte(secretName))
	hash := hex.EncodeToString(sum[:8])
	return secretName[:253-len(certpilotv1alpha1.ClaimSecretSuffix)-len(hash)-1] + "-" + hash + certpilotv1alpha1.ClaimSecretSuffix
}

// claimSecret reserves the Certificate's secretName before an order is created, so that of two
// Certificates naming one Secret exactly one orders at the CA and writes it. The reservation is
// a create of an empty claim Secret owned by the Certificate: the apiserver lets exactly one
// create succeed (AlreadyExists for the other), so the check and the write are one step. The
// certificate Secret itself is not created empty: workloads that mount it would start with no
// certificate instead of waiting for it. A claim whose owner is gone, or names another Secret
// now, is stale and is taken over (deleted with a precondition, created again).
func (r *CertificateReconciler) claimSecret(ctx context.Context, run *certificateRun) error {
	cert := run.cert
	name := claimSecretName(cert.Spec.SecretName)
	if cached := (&corev1.Secret{}); r.Get(ctx, types.NamespacedName{Namespace: cert.Namespace, Name: name}, cached) == nil &&
		kube.IsManaged(cached) && cached.Annotations[annotationClaimOf] == cert.Spec.SecretName && controlledBy(cached, cert) {
		return nil // claimed by an earlier order of this Certificate: no request
	}
	for attempt := 0; attempt < 2; attempt++ {
		claim := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: cert.Namespace,
				Labels: map[string]string{
					certpilotv1alpha1.LabelManagedBy:   certpilotv1alpha1.ManagedByValue,
					certpilotv1alpha1.LabelCertificate: cert.Name,
				},
				Annotations: map[string]string{annotationClaimOf: cert.Spec.SecretName},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate", Name: cert.Name, UID: cert.UID,
					Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
				}},
			},
			Type: corev1.SecretTypeOpaque,
		}
		err := r.Create(ctx, claim, client.FieldOwner(FieldManager))
		if err == nil {
			ctrl.LoggerFrom(ctx).V(1).Info("Claimed the certificate Secret's name", "secret", cert.Spec.SecretName, "claim", name)
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("claiming Secret name %s/%s: %w", cert.Namespace, cert.Spec.SecretName, err)
		}
		existing := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: cert.Namespace, Name: name}, existing); err != nil {
			if apierrors.IsNotFound(err) {
				continue // deleted since: try again
			}
			return fmt.Errorf("reading claim Secret %s/%s: %w", cert.Namespace, name, err)
		}
		if !kube.IsManaged(existing) || existing.Annotations[annotationClaimOf] != cert.Spec.SecretName {
			return stalled("SecretNotOwned",
				"Secret %s/%s, which certpilot uses to reserve secretName %q, exists and is not certpilot's claim: delete it or choose another secretName",
				cert.Namespace, name, cert.Spec.SecretName)
		}
		owner := metav1.GetControllerOf(existing)
		if owner != nil && owner.UID == cert.UID {
			return nil // ours, from an earlier order
		}
		live, err := r.claimHolder(ctx, existing, owner)
		if err != nil {
			return err
		}
		if live {
			return stalled("SecretOwnedByAnotherCertificate",
				"Secret %s/%s is claimed by Certificate %q; two Certificates cannot share a secretName",
				cert.Namespace, cert.Spec.SecretName, owner.Name)
		}
		// The Certificate that claimed the name is gone (or uses another Secret now): take the
		// claim over, unless it changed since it was read.
		uid, version := existing.UID, existing.ResourceVersion
		err = r.Delete(ctx, existing, client.Preconditions{UID: &uid, ResourceVersion: &version})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("removing the stale claim Secret %s/%s: %w", cert.Namespace, name, err)
		}
	}
	return fmt.Errorf("claim Secret %s/%s changed while it was claimed; retrying", cert.Namespace, name)
}

// claimHolder reports whether the Certificate that owns a claim still exists and still names the
// claimed Secret. It reads the API: the holder may have been created a moment ago.
func (r *CertificateReconciler) claimHolder(ctx context.Context, claim *corev1.Secret, owner *metav1.OwnerReference) (bool, error) {
	if owner == nil || owner.Kind != "Certificate" {
		return false, nil
	}
	holder := &certpilotv1alpha1.Certificate{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: claim.Namespace, Name: owner.Name}, holder)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading Certificate %s/%s, which claims Secret %s: %w", claim.Namespace, owner.Name, claim.Annotations[annotationClaimOf], err)
	}
	return holder.UID == owner.UID && holder.Spec.SecretName == claim.Annotations[annotationClaimOf], nil
}
