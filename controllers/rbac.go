// Package controllers glues certpilot's decisions (internal/renewal), ACME client (internal/acme)
// and PKI (internal/pki) to the Kubernetes API: one reconciler per kind, each phase of the
// certificate flow in its own file.
package controllers

// The permissions the manager needs, in one place, and no more; `make manifests` turns them into
// config/rbac/role.yaml. Each verb and the code that needs it:
//
//   - certificates, issuers, clusterissuers: get, list, watch (the manager's cache); patch on
//     certificates only (their finalizers: kube.SetFinalizer).
//   - certificates/status, issuers/status, clusterissuers/status: patch (patchStatus; the
//     issuer reconciler's deferred status patch; an ACME account's pause after rateLimited,
//     orderBudget.recordPause).
//   - certificates/finalizers: update, so that the owner references certpilot sets with
//     blockOwnerDeletion (certificate and claim Secrets name their Certificate) pass
//     the OwnerReferencesPermissionEnforcement admission plugin. Nothing is owned by an issuer.
//   - secrets: get, list, watch (cache of certpilot's Secrets; direct reads of account, EAB and
//     TSIG keys and of keystore passwords); create (account keys, challenge shards, secretName
//     claims); patch (server-side apply of certificate Secrets, merge patches of their template
//     labels and keystores, the next key into the claim, the single challenge Secret of earlier
//     versions); update (challenge shards, with their resourceVersion: ShardWriter); delete (a
//     stale secretName claim, with a uid and resourceVersion precondition: claimStore.claim).
//   - deployments, statefulsets, daemonsets: get, list, watch (metadata cache, pod templates);
//     patch (server-side apply of the challenge volume, and of injections by the injection
//     controller). StatefulSets and DaemonSets only serve injection: the Helm chart grants each
//     only when its injection.kinds (--inject-kinds) lists it.
//   - namespaces: get (the labels and the allowed-dns-zones annotation of a Certificate's
//     namespace, when its ClusterIssuer has a spec.policy: issuerPolicyDecision).
//   - events: create, patch (the event recorder).
//   - tokenreviews, subjectaccessreviews: create, only with --metrics-secure
//     (internal/metricsauth: who is scraping /metrics, and may they); the Helm chart grants
//     them only with metrics.secure.
//
// +kubebuilder:rbac:groups=certpilot.dev,resources=certificates,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=certpilot.dev,resources=issuers;clusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups=certpilot.dev,resources=certificates/status;issuers/status;clusterissuers/status,verbs=patch
// +kubebuilder:rbac:groups=certpilot.dev,resources=certificates/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
