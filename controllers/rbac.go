// Package controllers glues certpilot's decisions (internal/renewal), ACME client (internal/acme)
// and PKI (internal/pki) to the Kubernetes API: one reconciler per kind, each phase of the
// certificate flow in its own file.
package controllers

// The permissions the manager needs, in one place; `make manifests` turns them into
// config/rbac/role.yaml.
//
// Secrets: certificate Secrets and challenge Secrets are created and owned by certpilot; account
// keys, EAB and TSIG keys are read. Workloads: the load balancer Deployment is patched to mount
// its challenge Secret, and inject targets get an env reference or a volume.
//
// +kubebuilder:rbac:groups=certpilot.dev,resources=certificates;issuers;clusterissuers,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=certpilot.dev,resources=certificates/status;issuers/status;clusterissuers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=certpilot.dev,resources=certificates/finalizers;issuers/finalizers;clusterissuers/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets,verbs=get;list;watch;patch
