package controllers

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"runtime"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/renewal"
)

// The claim Secret "<secretName>-certpilot-claim" does two things with one object (and one write
// per issuance): it reserves secretName for one Certificate, and it holds the private key of
// the next certificate, stored before the CSR is sent so that a controller that restarts
// between finalize and storing the certificate still has the key the CA signed.
const (
	// annotationClaimOf is set on a claim Secret: the secretName it reserves.
	annotationClaimOf = "certpilot.dev/claim-of"
	// annotationKeyRevision is set on a claim Secret that holds a key: the status.revision of
	// the certificate the key is for. A key is used for one revision only: once a certificate
	// with it is stored the revision moves on, and the next issuance generates a fresh key.
	annotationKeyRevision = "certpilot.dev/key-revision"
)

// claimStore reads and writes claim Secrets: the cached client for reads that may lag and for
// writes, the API for reads that must not.
type claimStore struct {
	client    client.Client
	apiReader client.Reader
	// names answers whether a Secret the cache leaves out exists (nil: ask the API).
	names *kube.SecretNames
}

// claimLabels are a claim Secret's labels: certpilot's, its Certificate's, and LabelClaim, which
// readers of certificate Secrets (the edge) select away.
func claimLabels(cert *certpilotv1alpha1.Certificate) map[string]string {
	return map[string]string{
		certpilotv1alpha1.LabelManagedBy:   certpilotv1alpha1.ManagedByValue,
		certpilotv1alpha1.LabelCertificate: cert.Name,
		certpilotv1alpha1.LabelClaim:       "true",
	}
}

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

// nextKeyRevision is the revision the next stored certificate will have, for which a key is
// generated now.
func nextKeyRevision(cert *certpilotv1alpha1.Certificate) string {
	return strconv.FormatInt(cert.Status.Revision+1, 10)
}

// ownClaim reports whether secret is this Certificate's claim of its current secretName.
func ownClaim(secret *corev1.Secret, cert *certpilotv1alpha1.Certificate) bool {
	return kube.IsManaged(secret) && secret.Annotations[annotationClaimOf] == cert.Spec.SecretName && controlledBy(secret, cert)
}

// cached returns this Certificate's claim of its secretName as the cache holds it, or nil.
func (c claimStore) cached(ctx context.Context, run *certificateRun) *corev1.Secret {
	claim := &corev1.Secret{}
	key := types.NamespacedName{Namespace: run.cert.Namespace, Name: claimSecretName(run.cert.Spec.SecretName)}
	if err := c.client.Get(ctx, key, claim); err != nil || !ownClaim(claim, run.cert) {
		return nil
	}
	return claim
}

// checkClaimable stops, before an order, a Certificate whose secretName is claimed by
// something else: claim stalls it, or takes a stale claim over. It judges the claim observe read
// (lookUp), or reads it now when observe did not: an ordinary Secret squatting on the claim's
// name (SecretNotOwned) then stops the Certificate without any order, however often it is
// touched. A name the API shows unclaimed is claimed by the write that records the order
// (recordOrder); of two Certificates created at the same moment for one new name, the second
// then finds the claim taken after its order, which is abandoned unused.
func (c claimStore) checkClaimable(ctx context.Context, run *certificateRun) error {
	read := run.observed.claim
	if read == nil {
		read = c.lookUp(ctx, run.cert)
	}
	claim, err := read.claim, read.err
	if err != nil {
		return err
	}
	if claim == nil {
		return nil
	}
	if ownClaim(claim, run.cert) {
		return nil
	}
	if !certpilotClaim(claim, run.cert) {
		return claimSquatted(run.cert, claim.Name) // no key made, no write tried
	}
	_, err = c.claim(ctx, run)
	return err
}

// claimRead is a lookup of a Certificate's claim: the claim (nil when there is none) or why it
// could not be read.
type claimRead struct {
	claim *corev1.Secret
	err   error
}

// lookUp reads the claim of cert's secretName. The cache holds only Secrets labelled as
// certpilot's, and only the metadata of those no Certificate controls, so a name held by a
// Secret no Certificate controls, or one the cache shows unclaimed that a Secret which is not
// certpilot's holds (kube.LookUpSecret), is read from the API (its watch cache: the claim write
// that follows the order fails if a Secret of that name appeared since).
func (c claimStore) lookUp(ctx context.Context, cert *certpilotv1alpha1.Certificate) *claimRead {
	claim := &corev1.Secret{}
	key := types.NamespacedName{Namespace: cert.Namespace, Name: claimSecretName(cert.Spec.SecretName)}
	err := c.client.Get(ctx, key, claim)
	switch {
	case apierrors.IsNotFound(err):
		err = kube.LookUpSecret(ctx, c.names, c.apiReader, key, claim)
	case err == nil && !kube.ControlledByCertificate(claim):
		claim = &corev1.Secret{}
		err = c.apiReader.Get(ctx, key, claim, kube.FromWatchCache)
	}
	switch {
	case apierrors.IsNotFound(err):
		return &claimRead{}
	case err != nil:
		return &claimRead{err: fmt.Errorf("reading claim Secret %s: %w", key, err)}
	}
	return &claimRead{claim: claim}
}

// certpilotClaim reports whether secret is certpilot's claim of cert's secretName (this
// Certificate's or another's).
func certpilotClaim(secret *corev1.Secret, cert *certpilotv1alpha1.Certificate) bool {
	return kube.IsManaged(secret) && secret.Annotations[annotationClaimOf] == cert.Spec.SecretName
}

// claimSquatted is the stall of a Certificate whose claim's name a Secret that is not
// certpilot's claim holds.
func claimSquatted(cert *certpilotv1alpha1.Certificate, claimName string) error {
	return stalled("SecretNotOwned",
		"Secret %s/%s, which certpilot uses to reserve secretName %q, exists and is not certpilot's claim: delete it or choose another secretName",
		cert.Namespace, claimName, cert.Spec.SecretName)
}

// claim returns the Certificate's claim of its secretName, creating it when there is
// none. The claim is owned by the Certificate and holds a fresh private key (the key of the
// certificate to come) and the open order (recordOrder): the apiserver lets exactly one create
// succeed (AlreadyExists for the other), so of two Certificates naming one Secret exactly one
// writes it. The certificate Secret itself is not created early: workloads that mount it would
// start with no certificate instead of waiting for it. A claim whose owner is gone, or names
// another Secret now, is stale and is taken over (deleted with a precondition, created again).
func (c claimStore) claim(ctx context.Context, run *certificateRun) (*corev1.Secret, error) {
	cert := run.cert
	name := claimSecretName(cert.Spec.SecretName)
	if cached := c.cached(ctx, run); cached != nil {
		return cached, nil // claimed by an earlier order of this Certificate: no request
	}
	keyPEM, err := run.freshKey()
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 2; attempt++ {
		claim := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: cert.Namespace,
				Labels:          claimLabels(cert),
				Annotations:     map[string]string{annotationClaimOf: cert.Spec.SecretName, annotationKeyRevision: nextKeyRevision(cert)},
				OwnerReferences: []metav1.OwnerReference{*ownerReferenceOf(cert)},
			},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{corev1.TLSPrivateKeyKey: keyPEM},
		}
		setOpenOrder(claim, run)
		err := c.client.Create(ctx, claim, client.FieldOwner(FieldManager))
		if err == nil {
			ctrl.LoggerFrom(ctx).V(1).Info("Claimed the certificate Secret's name", "secret", cert.Spec.SecretName, "claim", name)
			return claim, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("claiming Secret name %s/%s: %w", cert.Namespace, cert.Spec.SecretName, err)
		}
		existing := &corev1.Secret{}
		if err := c.apiReader.Get(ctx, types.NamespacedName{Namespace: cert.Namespace, Name: name}, existing); err != nil {
			if apierrors.IsNotFound(err) {
				continue // deleted since: try again
			}
			return nil, fmt.Errorf("reading claim Secret %s/%s: %w", cert.Namespace, name, err)
		}
		if !certpilotClaim(existing, cert) {
			return nil, claimSquatted(cert, name)
		}
		owner := metav1.GetControllerOf(existing)
		if owner != nil && owner.UID == cert.UID {
			return existing, nil // ours, from an earlier order
		}
		live, err := c.holder(ctx, existing, owner)
		if err != nil {
			return nil, err
		}
		if live {
			return nil, stalled("SecretOwnedByAnotherCertificate",
				"Secret %s/%s is claimed by Certificate %q; two Certificates cannot share a secretName",
				cert.Namespace, cert.Spec.SecretName, owner.Name)
		}
		// The Certificate that claimed the name is gone (or uses another Secret now): take the
		// claim over, unless it changed since it was read.
		uid, version := existing.UID, existing.ResourceVersion
		err = c.client.Delete(ctx, existing, client.Preconditions{UID: &uid, ResourceVersion: &version})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return nil, fmt.Errorf("removing the stale claim Secret %s/%s: %w", cert.Namespace, name, err)
		}
	}
	return nil, fmt.Errorf("claim Secret %s/%s changed while it was claimed; retrying", cert.Namespace, name)
}

// update writes into the Certificate's claim the key of the next revision (a fresh one
// unless the claim holds it already) and the open order (or no order), and returns the key.
// Optimistic lock: a claim changed since it was read (taken over, deleted and made again) is
// read again by the next reconcile rather than written over.
func (c claimStore) update(ctx context.Context, run *certificateRun, claim *corev1.Secret) ([]byte, error) {
	want := nextKeyRevision(run.cert)
	keyPEM := claim.Data[corev1.TLSPrivateKeyKey]
	if _, err := pki.DecodePrivateKey(keyPEM); err != nil || claim.Annotations[annotationKeyRevision] != want {
		if keyPEM, err = run.freshKey(); err != nil {
			return nil, err
		}
	}
	base := claim.DeepCopy()
	claim = claim.DeepCopy()
	if claim.Annotations == nil {
		claim.Annotations = map[string]string{}
	}
	claim.Annotations[annotationKeyRevision] = want
	claim.Labels = claimLabels(run.cert) // a claim an earlier version made gets LabelClaim
	setOpenOrder(claim, run)
	claim.Data = map[string][]byte{corev1.TLSPrivateKeyKey: keyPEM}
	if err := c.client.Patch(ctx, claim, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldManager)); err != nil {
		return nil, fmt.Errorf("storing the next private key and the order in %s/%s: %w", claim.Namespace, claim.Name, err)
	}
	return keyPEM, nil
}

// holder reports whether the Certificate that owns a claim still exists and still names the
// claimed Secret. It reads the API: the holder may have been created a moment ago.
func (c claimStore) holder(ctx context.Context, claim *corev1.Secret, owner *metav1.OwnerReference) (bool, error) {
	if owner == nil || owner.Kind != "Certificate" {
		return false, nil
	}
	holder := &certpilotv1alpha1.Certificate{}
	err := c.apiReader.Get(ctx, types.NamespacedName{Namespace: claim.Namespace, Name: owner.Name}, holder)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading Certificate %s/%s, which claims Secret %s: %w", claim.Namespace, owner.Name, claim.Annotations[annotationClaimOf], err)
	}
	return holder.UID == owner.UID && holder.Spec.SecretName == claim.Annotations[annotationClaimOf], nil
}

// nextPrivateKey returns the key for the order's CSR: the claim's when it is for the next
// revision (written with the order, or by an earlier finalize of this issuance), else a fresh
// one, stored in the claim first (with the order). Claims of a Certificate that holds its Secret
// from before claims existed are created here.
func (c claimStore) nextPrivateKey(ctx context.Context, run *certificateRun) (crypto.Signer, error) {
	want := nextKeyRevision(run.cert)
	usable := func(s *corev1.Secret) bool { return s.Annotations[annotationKeyRevision] == want }
	claim, err := c.read(ctx, run, usable)
	if err != nil {
		return nil, err
	}
	if claim == nil {
		if claim, err = c.claim(ctx, run); err != nil {
			return nil, err
		}
	}
	if usable(claim) {
		if key, err := pki.DecodePrivateKey(claim.Data[corev1.TLSPrivateKeyKey]); err == nil {
			return key, nil
		}
	}
	keyPEM, err := c.update(ctx, run, claim)
	if err != nil {
		return nil, err
	}
	return pki.DecodePrivateKey(keyPEM)
}

// read returns this Certificate's claim: from the cache when it satisfies fresh (the common
// case, no request), else from the API, so a cache that has not seen the last write yet never
// passes for the truth; nil when there is none. Another Certificate's claim, or a foreign Secret
// of that name, stalls the Certificate.
func (c claimStore) read(ctx context.Context, run *certificateRun, fresh func(*corev1.Secret) bool) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: run.cert.Namespace, Name: claimSecretName(run.cert.Spec.SecretName)}
	secret := &corev1.Secret{}
	if err := c.client.Get(ctx, key, secret); err == nil && ownClaim(secret, run.cert) && fresh(secret) {
		return secret, nil
	}
	secret = &corev1.Secret{}
	err := c.apiReader.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !ownClaim(secret, run.cert) {
		return nil, stalled("SecretOwnedByAnotherCertificate",
			"Secret %s/%s, where certpilot keeps the claim of secretName %q and the next private key of Certificate %q, belongs to another object",
			secret.Namespace, secret.Name, run.cert.Spec.SecretName, run.cert.Name)
	}
	return secret, nil
}

// issuedKey returns the claim's private key when it matches leaf, the certificate of the order
// being stored. With no key at all it fails with PrivateKeyLost; with a key that does not
// match, KeyMismatch.
func (s *secretStore) issuedKey(ctx context.Context, run *certificateRun, leaf *x509.Certificate) ([]byte, error) {
	matches := func(s *corev1.Secret) bool {
		key, err := pki.DecodePrivateKey(s.Data[corev1.TLSPrivateKeyKey])
		return err == nil && pki.KeyMatches(leaf, key)
	}
	claim, err := s.claims.read(ctx, run, matches)
	if err != nil {
		return nil, err
	}
	if claim != nil && matches(claim) {
		return claim.Data[corev1.TLSPrivateKeyKey], nil
	}
	if claim == nil || len(claim.Data[corev1.TLSPrivateKeyKey]) == 0 {
		return nil, s.failures.recordFailure(ctx, run, false, "PrivateKeyLost", "the private key of order %s was deleted before the certificate was stored", run.order.URL)
	}
	return nil, s.failures.recordFailure(ctx, run, false, "KeyMismatch", "the CA's certificate does not match the order's private key")
}

// freshKey returns a new private key: the one keyMaker made for this order, or one made now.
func (run *certificateRun) freshKey() ([]byte, error) {
	if keyPEM := run.nextKey; keyPEM != nil {
		run.nextKey = nil
		return keyPEM, nil
	}
	return generateKey(run.cert)
}

// generateKey makes a fresh private key as the Certificate's spec asks, PEM-encoded.
func generateKey(cert *certpilotv1alpha1.Certificate) ([]byte, error) {
	algorithm, size := certpilotv1alpha1.KeyAlgorithmECDSA, 0
	if spec := cert.Spec.PrivateKey; spec != nil {
		algorithm, size = spec.Algorithm, int(spec.Size)
	}
	if size == 0 {
		size = renewal.DefaultKeySize(algorithm)
	}
	keyGenerations <- struct{}{}
	key, err := pki.GenerateKey(algorithm, size)
	<-keyGenerations
	if err != nil {
		return nil, stalled("InvalidPrivateKeySpec", "%v", err)
	}
	return pki.EncodePrivateKey(key)
}

// keyGenerations bounds the keys generated at once to two per processor: an RSA key is a few
// hundred milliseconds of one core, and a burst of issuances that made all its keys at once
// would have each wait until nearly the last key is done, where a few at a time let the first
// issuances go on to the CA while the later keys are made (and keep the processors busy when a
// key generation waits for its turn on one).
var keyGenerations = make(chan struct{}, 2*max(runtime.GOMAXPROCS(0), 1))
