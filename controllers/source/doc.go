// Package source turns the places where users already declare TLS into Certificates: a Gateway
// or a ListenerSet (gateway.networking.k8s.io/v1) or an Ingress (networking.k8s.io/v1)
// annotated with an issuer (a ListenerSet may inherit its Gateway's) gets one Certificate per
// Secret its listeners or tls entries name, owned by it, applied server-side and pruned when the
// listener, the entry or the annotation goes away. cert-manager calls these controllers
// ingress-shim and gateway-shim; docs/gateway.md is the user's spec.
//
// One file a concern: annotations.go reads the annotations, certificates.go decides which
// Certificates a source wants (pure functions, table-tested), sync.go applies and prunes them,
// gateway.go, listenerset.go and ingress.go are the three kinds of source (one reconciler),
// detect.go turns the Gateway and ListenerSet sources on when their CRDs appear.
package source

// The permissions of the sources are config/rbac/source_role.yaml (the Helm chart grants the
// same rules, per enabled source, in templates/rbac-sources.yaml). They are written by hand, not
// generated from +kubebuilder:rbac markers: `make manifests` reads ./controllers/... for the
// manager's role, so markers here would land in the role every install gets.
//
// Certificates are created, applied server-side and deleted; Issuers and ClusterIssuers are read
// to decide whether a wildcard can be validated; Gateways, ListenerSets and Ingresses are read;
// Events are written about them. Setting blockOwnerDeletion on a Certificate's owner reference needs update
// on the owner's finalizers where the OwnerReferencesPermissionEnforcement admission plugin is on.
