package v1alpha1

import "sigs.k8s.io/controller-runtime/pkg/client"

// GenericIssuer is what Issuer and ClusterIssuer share, so one reconciler and one account cache
// serve both.
// +kubebuilder:object:generate=false
type GenericIssuer interface {
	client.Object
	GetSpec() *IssuerSpec
	GetStatus() *IssuerStatus
	// Kind is "Issuer" or "ClusterIssuer" (TypeMeta is empty on objects read through a typed
	// client, so it cannot be relied on).
	Kind() string
}

// GetSpec returns the issuer's spec.
func (i *Issuer) GetSpec() *IssuerSpec { return &i.Spec }

// GetStatus returns the issuer's status.
func (i *Issuer) GetStatus() *IssuerStatus { return &i.Status }

// Kind returns "Issuer".
func (i *Issuer) Kind() string { return "Issuer" }

// GetSpec returns the cluster issuer's spec.
func (i *ClusterIssuer) GetSpec() *IssuerSpec { return &i.Spec }

// GetStatus returns the cluster issuer's status.
func (i *ClusterIssuer) GetStatus() *IssuerStatus { return &i.Status }

// Kind returns "ClusterIssuer".
func (i *ClusterIssuer) Kind() string { return "ClusterIssuer" }

// KindOrDefault is the referenced issuer's kind, "Issuer" when the reference leaves it empty (the
// API's default; objects built in code may lack it).
func (r IssuerReference) KindOrDefault() string {
	if r.Kind == "" {
		return "Issuer"
	}
	return r.Kind
}

// IssuerRefs are the issuers the Certificate may use, in order: spec.issuerRef, then
// spec.fallbackIssuerRefs; each with its kind filled in.
func (c *Certificate) IssuerRefs() []IssuerReference {
	refs := make([]IssuerReference, 0, 1+len(c.Spec.FallbackIssuerRefs))
	for _, ref := range append([]IssuerReference{c.Spec.IssuerRef}, c.Spec.FallbackIssuerRefs...) {
		refs = append(refs, IssuerReference{Name: ref.Name, Kind: ref.KindOrDefault()})
	}
	return refs
}
