// Package v1alpha1 holds certpilot's API: Certificate, Issuer and ClusterIssuer in the group
// certpilot.dev. The field names are the user-facing contract; docs/ describes each kind.
// +kubebuilder:object:generate=true
// +groupName=certpilot.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of certpilot's API.
	GroupVersion = schema.GroupVersion{Group: "certpilot.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this group version with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
