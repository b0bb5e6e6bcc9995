// Package source turns the places where users already declare TLS into Certificates: a Gateway
// (gateway.networking.k8s.io/v1) or an Ingress (networking.k8s.io/v1) annotated with an issuer
// gets one Certificate per Secret its listeners or tls entries name, owned by it, applied
// server-side and pruned when the listener, the entry or the annotation goes away. cert-manager
// calls these controllers ingress-shim and gateway-shim; docs/gateway.md is the user's spec.
//
// One file a concern: annotations.go reads the annotations, certificates.go decides which
// Certificates a source wants (pure functions, table-tested), sync.go applies and prunes them,
// gateway.go and ingress.go are the two reconcilers, detect.go turns the Gateway source on when
// the Gateway API CRDs appear.
package source

// The permissions of the sources, generated into config/rbac/source/role.yaml by
// `make manifests` and granted by the Helm chart only when a source is enabled.
//
// Certificates are created, applied server-side and deleted; issuers are read to decide whether
// a wildcard can be validated. Setting blockOwnerDeletion on a Certificate's owner reference
// needs update on the owner's finalizers where OwnerReferencesPermissionEnforcement is on.
//
// +kubebuilder:rbac:groups=certpilot.dev,resources=certificates,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=certpilot.dev,resources=issuers;clusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways/finalizers,verbs=update
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
