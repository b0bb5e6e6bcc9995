package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// sync makes the source's generated Certificates what its annotations and entries ask for:
// apply the wanted ones, delete the generated ones no entry names any more, and tell the user
// what was refused. Without the issuer annotation the source wants none; with an annotation
// that cannot be used, nothing is created or deleted until it is fixed. annotations are the
// source's own, or for a ListenerSet its own with what it inherits (annotationProblems say
// what it could not inherit).
func (r *Reconciler) sync(ctx context.Context, src client.Object, annotations map[string]string, annotationProblems []problem,
	entries []tlsEntry, problems []problem) error {
	generated, err := r.generated(ctx, src)
	if err != nil {
		return err
	}
	for _, p := range annotationProblems {
		r.event(src, nil, corev1.EventTypeWarning, p.Reason, "%s", p.Message)
	}
	t, annotated, err := parseAnnotations(annotations)
	if !annotated {
		why := "the " + r.kind.Name + " has no issuer annotation any more"
		if r.kind.inherits() {
			why = "neither the " + r.kind.Name + " nor its Gateway has an issuer annotation it can use"
		}
		return r.prune(ctx, src, generated, nil, why)
	}
	if err != nil {
		// A person must fix the annotation; that change wakes the source again.
		r.event(src, nil, corev1.EventTypeWarning, reasonInvalidAnnotation, "%v", err)
		return nil
	}

	blocks := groupBySecret(entries)
	issuer, err := r.issuerSolver(ctx, src.GetNamespace(), t, blocks)
	if err != nil {
		return err
	}
	ref := sourceRef{APIVersion: r.kind.APIVersion, Kind: r.kind.Name, Namespace: src.GetNamespace(), Name: src.GetName(), UID: src.GetUID()}
	certs, refused, refusals := desiredCertificates(ref, t, blocks, issuer)
	for _, p := range append(problems, refusals...) {
		r.event(src, nil, corev1.EventTypeWarning, p.Reason, "%s", p.Message)
	}

	// A refused block keeps the Certificate it had: a wildcard whose issuer is briefly missing
	// must not lose its Secret (the garbage collector would delete it with the Certificate).
	keep := map[string]bool{}
	for _, block := range refused {
		keep[block.SecretName] = true
	}
	var errs []error
	for _, cert := range certs {
		keep[cert.Name] = true
		if err := r.apply(ctx, src, cert); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.prune(ctx, src, generated, keep, "no "+entryWord(r.kind.Name)+" names its Secret any more"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func entryWord(kind string) string {
	if kind == gatewayKind.Name || kind == listenerSetKindName {
		return "listener"
	}
	return "spec.tls entry"
}

// generated lists the Certificates this source controls.
func (r *Reconciler) generated(ctx context.Context, src client.Object) ([]certpilotv1alpha1.Certificate, error) {
	var list certpilotv1alpha1.CertificateList
	if err := r.Client.List(ctx, &list, client.InNamespace(src.GetNamespace()),
		client.MatchingLabels{LabelSourceKind: r.kind.Name}); err != nil {
		return nil, fmt.Errorf("listing the Certificates of %s %s/%s: %w", r.kind.Name, src.GetNamespace(), src.GetName(), err)
	}
	var owned []certpilotv1alpha1.Certificate
	for _, cert := range list.Items {
		if metav1.IsControlledBy(&cert, src) {
			owned = append(owned, cert)
		}
	}
	return owned, nil
}

// issuerSolver reads the issuer's default solver when the wildcard rule needs it: a block has a
// wildcard and no solver annotation is set.
func (r *Reconciler) issuerSolver(ctx context.Context, namespace string, t template, blocks []tlsBlock) (issuerSolver, error) {
	needed := false
	for _, block := range blocks {
		needed = needed || firstWildcard(block.DNSNames) != ""
	}
	if !needed || t.Solver != nil {
		return issuerSolver{}, nil
	}
	var issuer certpilotv1alpha1.GenericIssuer = &certpilotv1alpha1.ClusterIssuer{}
	key := client.ObjectKey{Name: t.IssuerRef.Name}
	if t.IssuerRef.Kind == "Issuer" {
		issuer, key.Namespace = &certpilotv1alpha1.Issuer{}, namespace
	}
	if err := r.Client.Get(ctx, key, issuer); err != nil {
		if apierrors.IsNotFound(err) {
			return issuerSolver{}, nil
		}
		return issuerSolver{}, fmt.Errorf("reading %s %s: %w", t.IssuerRef.Kind, t.IssuerRef.Name, err)
	}
	return issuerSolver{Found: true, Solver: issuer.GetSpec().Solver}, nil
}

// apply creates or updates one generated Certificate with server-side apply. A Certificate of
// that name that this source does not control is never touched.
func (r *Reconciler) apply(ctx context.Context, src client.Object, cert *certpilotv1alpha1.Certificate) error {
	key := client.ObjectKeyFromObject(cert)
	existing := &certpilotv1alpha1.Certificate{}
	err := r.Client.Get(ctx, key, existing)
	if apierrors.IsNotFound(err) {
		// The cache can lag behind a Certificate just written by hand: ask the API before
		// creating one.
		err = r.APIReader.Get(ctx, key, existing)
	}
	switch {
	case apierrors.IsNotFound(err):
		existing = nil
	case err != nil:
		return fmt.Errorf("reading Certificate %s/%s: %w", key.Namespace, key.Name, err)
	case !metav1.IsControlledBy(existing, src):
		r.event(src, existing, corev1.EventTypeWarning, reasonCertificateConflict,
			"Certificate %s exists and was not generated from this %s: left alone, no Certificate for Secret %s",
			key.Name, r.kind.Name, cert.Spec.SecretName)
		return nil
	}

	u, err := toUnstructured(cert)
	if err != nil {
		return err
	}
	opts := []client.ApplyOption{client.FieldOwner(FieldManager)}
	if existing != nil {
		// Generated Certificates follow their source: a hand edit of a field certpilot sets
		// is put back.
		opts = append(opts, client.ForceOwnership)
	}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), opts...); err != nil {
		if apierrors.IsInvalid(err) {
			r.event(src, nil, corev1.EventTypeWarning, reasonCertificateInvalid,
				"Certificate %s for %s was refused by the API: %v", key.Name, strings.Join(cert.Spec.DNSNames, ", "), err)
			return nil
		}
		return fmt.Errorf("applying Certificate %s/%s: %w", key.Namespace, key.Name, err)
	}
	log := ctrl.LoggerFrom(ctx)
	switch {
	case existing == nil:
		log.Info("Created Certificate", "certificate", key.Name, "dnsNames", cert.Spec.DNSNames)
		r.event(src, cert, corev1.EventTypeNormal, reasonCertificateCreated,
			"Created Certificate %s for %s", key.Name, strings.Join(cert.Spec.DNSNames, ", "))
	case existing.Generation != u.GetGeneration():
		log.Info("Updated Certificate", "certificate", key.Name, "dnsNames", cert.Spec.DNSNames)
		r.event(src, cert, corev1.EventTypeNormal, reasonCertificateUpdated,
			"Updated Certificate %s: %s", key.Name, strings.Join(cert.Spec.DNSNames, ", "))
	}
	return nil
}

// prune deletes the generated Certificates not in keep (all of them when keep is nil).
func (r *Reconciler) prune(ctx context.Context, src client.Object, generated []certpilotv1alpha1.Certificate, keep map[string]bool, why string) error {
	var errs []error
	for i := range generated {
		cert := &generated[i]
		if keep[cert.Name] {
			continue
		}
		if err := r.Client.Delete(ctx, cert, client.Preconditions{UID: &cert.UID}); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("deleting Certificate %s/%s: %w", cert.Namespace, cert.Name, err))
			}
			continue
		}
		ctrl.LoggerFrom(ctx).Info("Deleted Certificate", "certificate", cert.Name)
		r.event(src, cert, corev1.EventTypeNormal, reasonCertificateDeleted, "Deleted Certificate %s: %s", cert.Name, why)
	}
	return errors.Join(errs...)
}

func (r *Reconciler) event(src client.Object, related runtime.Object, eventType, reason, format string, args ...any) {
	r.Recorder.Eventf(src, related, eventType, reason, "Sync", format, args...)
}

// toUnstructured turns a generated Certificate into the apply request: only the fields certpilot
// sets (no status, no zero creation time), so that what it stops setting is removed.
func toUnstructured(cert *certpilotv1alpha1.Certificate) (*unstructured.Unstructured, error) {
	data, err := json.Marshal(cert)
	if err != nil {
		return nil, err
	}
	object := map[string]any{}
	if err := json.Unmarshal(data, &object); err != nil {
		return nil, err
	}
	delete(object, "status")
	if metadata, ok := object["metadata"].(map[string]any); ok {
		delete(metadata, "creationTimestamp")
	}
	return &unstructured.Unstructured{Object: object}, nil
}
