package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CertificateSpec is what the user asks for: a certificate for some DNS names and IP addresses
// from an issuer, kept in a Secret and renewed before it expires.
// +kubebuilder:validation:XValidation:rule="!has(self.fallbackIssuerRefs) || self.fallbackIssuerRefs.all(f, f.name != self.issuerRef.name || f.kind != self.issuerRef.kind)",message="spec.fallbackIssuerRefs must not list spec.issuerRef"
// +kubebuilder:validation:XValidation:rule="has(self.dnsNames) || has(self.ipAddresses)",message="set at least one of dnsNames or ipAddresses"
// +kubebuilder:validation:XValidation:rule="(has(self.dnsNames) ? size(self.dnsNames) : 0) + (has(self.ipAddresses) ? size(self.ipAddresses) : 0) <= 100",message="a certificate has at most 100 names: dnsNames and ipAddresses together"
// +kubebuilder:validation:XValidation:rule="!has(self.dnsNames) || self.dnsNames.all(n, !n.startsWith('*.') || (has(self.solvers) && self.solvers.exists(s, has(s.dnsNames) && n in s.dnsNames) ? has(self.solvers.filter(s, has(s.dnsNames) && n in s.dnsNames)[0].dns01) : (!has(self.solver) || has(self.solver.dns01))))",message="wildcard names (*.example.com) can only be validated by the dns01 solver"
// +kubebuilder:validation:XValidation:rule="!has(self.ipAddresses) || self.ipAddresses.all(a, has(self.solvers) && self.solvers.exists(s, has(s.ipAddresses) && a in s.ipAddresses) ? !has(self.solvers.filter(s, has(s.ipAddresses) && a in s.ipAddresses)[0].dns01) : (!has(self.solver) || !has(self.solver.dns01)))",message="IP addresses can only be validated by the http01 or tlsALPN01 solver, not by dns01"
// +kubebuilder:validation:XValidation:rule="!has(self.solvers) || self.solvers.all(s, !has(s.dnsNames) || s.dnsNames.all(n, has(self.dnsNames) && n in self.dnsNames))",message="every name in spec.solvers[].dnsNames must be one of spec.dnsNames"
// +kubebuilder:validation:XValidation:rule="!has(self.solvers) || self.solvers.all(s, !has(s.ipAddresses) || s.ipAddresses.all(a, has(self.ipAddresses) && a in self.ipAddresses))",message="every address in spec.solvers[].ipAddresses must be one of spec.ipAddresses"
// +kubebuilder:validation:XValidation:rule="!has(self.keystores) || ((!has(self.keystores.pkcs12) || !has(self.keystores.pkcs12.passwordSecretRef) || self.keystores.pkcs12.passwordSecretRef.name != self.secretName) && (!has(self.keystores.jks) || !has(self.keystores.jks.passwordSecretRef) || self.keystores.jks.passwordSecretRef.name != self.secretName))",message="a keystore's passwordSecretRef cannot name the certificate Secret (spec.secretName): keep the password in a Secret of its own"
type CertificateSpec struct {
	// DNSNames are the DNS names the certificate is valid for; the first is its subject
	// (common name). Lowercase DNS names, optionally with a leading "*." for a wildcard (dns01
	// only). At least one of dnsNames and ipAddresses is set.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:XValidation:rule=`self.matches('^([*][.])?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])+[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$') && !self.matches('^[0-9.]+$')`,message="not a valid DNS name: use lowercase names such as www.example.com or *.example.com (no trailing dot; IP addresses go in spec.ipAddresses)"
	DNSNames []string `json:"dnsNames,omitempty"`

	// IPAddresses are the IP addresses the certificate is valid for (RFC 8738), IPv4 or IPv6,
	// each in canonical form (as 192.0.2.1 or 2001:db8::1: lowercase, zeros compressed). They
	// are ordered as ACME "ip" identifiers and written into the certificate as IP address
	// subject alternative names, never as its common name. Only http01 and tlsALPN01 can
	// validate them (a dns01 solver is refused); Let's Encrypt issues them only with the
	// shortlived profile (issuer spec.acme.profile).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=39
	// +kubebuilder:validation:items:XValidation:rule=`isIP(self) && ip.isCanonical(self)`,message="not an IP address in canonical form: use an IPv4 address such as 192.0.2.1 or an IPv6 address such as 2001:db8::1 (lowercase, zeros compressed, no zone, no brackets)"
	IPAddresses []string `json:"ipAddresses,omitempty"`

	// SecretName is the Secret, in the Certificate's namespace, that receives the certificate:
	// type kubernetes.io/tls with keys "tls.crt" (leaf, then the CA's intermediates), "tls.key",
	// "ca.crt" (the intermediates the CA sent with the leaf; ACME delivers no root) and
	// "bundle.pem" (key, leaf and chain in one PEM). certpilot creates and owns it; it never
	// overwrites a Secret it does not own. Names ending in "-certpilot-next-key" or
	// "-certpilot-claim" are certpilot's own Secrets and are refused.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="!self.endsWith('-certpilot-next-key') && !self.endsWith('-certpilot-claim')",message="secretName must not end in -certpilot-next-key or -certpilot-claim: certpilot names its own Secrets so"
	SecretName string `json:"secretName"`

	// IssuerRef names the Issuer (same namespace) or ClusterIssuer that issues the certificate.
	// +required
	IssuerRef IssuerReference `json:"issuerRef"`

	// FallbackIssuerRefs are issuers tried in order when issuerRef cannot issue: after an
	// outage of its CA (network errors, timeouts, 5xx, an issuer not Ready for 2 minutes), a
	// rate limit (429, rateLimited), or 3 failed attempts in a row for any other reason (fewer
	// when the next retry would come within a day of the served certificate's expiry). An order
	// open at one CA is dropped, never finished at another. Every renewal starts again at
	// issuerRef. status.issuerRef names the issuer of the served certificate.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=3
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, b.name == a.name && b.kind == a.kind))",message="spec.fallbackIssuerRefs must not list an issuer twice"
	FallbackIssuerRefs []IssuerReference `json:"fallbackIssuerRefs,omitempty"`

	// RenewBefore is how long before expiry the certificate is renewed. Short-lived
	// certificates renew earlier: at most a third of their lifetime before expiry (half under
	// ten days), so renewals never loop. When the CA publishes renewal information (ARI), its
	// window wins. At least 5m.
	// +optional
	// +kubebuilder:default="168h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5m')",message="renewBefore must be at least 5m"
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`

	// PrivateKey sets the algorithm and size of the certificate's key. A new key is generated
	// for every issuance.
	// +optional
	// +kubebuilder:default={algorithm: ECDSA, size: 256}
	PrivateKey *PrivateKey `json:"privateKey,omitempty"`

	// Solver proves control of the names. Default: the issuer's solver.
	// +optional
	Solver *Solver `json:"solver,omitempty"`

	// Solvers validate some of the names with another solver than spec.solver, for example a
	// wildcard through dns01 while the other names use tlsALPN01. A name no entry lists uses
	// spec.solver (or the issuer's); the first entry that lists a name wins.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=5
	Solvers []NamedSolver `json:"solvers,omitempty"`

	// Inject delivers the certificate to workloads in the Certificate's namespace, as an
	// environment variable or a mounted volume, and rolls them when it is renewed.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Inject []InjectTarget `json:"inject,omitempty"`

	// SecretTemplate adds labels and annotations to the certificate Secret (for replication
	// tools, Argo CD, backup selectors). They are written with the certificate, and a change
	// is written at once without a new certificate; a key removed from the template is removed
	// from the Secret. certpilot's own labels and annotations cannot be set here.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`

	// Keystores adds the certificate to the Secret as PKCS#12 and JKS keystores (keys
	// "keystore.p12", "truststore.p12", "keystore.jks", "truststore.jks"), for Java and .NET
	// workloads. They are written with the certificate, rebuilt when the spec or a password
	// changes, and removed when removed from the spec.
	// +optional
	Keystores *CertificateKeystores `json:"keystores,omitempty"`

	// AdditionalOutputFormats adds the certificate to the Secret in other formats: DER (key
	// "key.der") and CombinedPEM (key "tls-combined.pem").
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=2
	AdditionalOutputFormats []CertificateAdditionalOutputFormat `json:"additionalOutputFormats,omitempty"`
}

// SecretTemplate is what certpilot adds to the metadata of a certificate Secret. A key or value
// the API would refuse on a Secret (not a qualified name, a label value over 63 characters) is
// left out and reported in an Event.
type SecretTemplate struct {
	// Labels to set on the Secret. Keys app.kubernetes.io/managed-by and certpilot.dev/* are
	// certpilot's.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, k != 'app.kubernetes.io/managed-by' && !k.startsWith('certpilot.dev/'))",message="secretTemplate.labels cannot set certpilot's own labels (app.kubernetes.io/managed-by, certpilot.dev/*)"
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 253 && self[k].size() <= 63)",message="a label key has at most 253 characters and a label value at most 63"
	Labels map[string]string `json:"labels,omitempty"`

	// Annotations to set on the Secret. Keys certpilot.dev/* are certpilot's.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('certpilot.dev/'))",message="secretTemplate.annotations cannot set certpilot's own annotations (certpilot.dev/*)"
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 253 && self[k].size() <= 4096)",message="an annotation key has at most 253 characters and its value at most 4096"
	Annotations map[string]string `json:"annotations,omitempty"`
}

// IssuerReference names an Issuer or ClusterIssuer.
type IssuerReference struct {
	// Name of the issuer.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Kind of the issuer: Issuer (in the Certificate's namespace) or ClusterIssuer.
	// +optional
	// +kubebuilder:default=Issuer
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	Kind string `json:"kind,omitempty"`
}

// Private key algorithms.
const (
	KeyAlgorithmECDSA = "ECDSA"
	KeyAlgorithmRSA   = "RSA"
)

// PrivateKey is the certificate key's algorithm and size.
// +kubebuilder:validation:XValidation:rule="self.algorithm != 'RSA' || !has(self.size) || self.size in [2048, 3072, 4096]",message="RSA keys must be 2048, 3072 or 4096 bits"
// +kubebuilder:validation:XValidation:rule="self.algorithm != 'ECDSA' || !has(self.size) || self.size in [256, 384]",message="ECDSA keys must be 256 (P-256) or 384 (P-384) bits"
type PrivateKey struct {
	// Algorithm is ECDSA or RSA.
	// +optional
	// +kubebuilder:default=ECDSA
	// +kubebuilder:validation:Enum=ECDSA;RSA
	Algorithm string `json:"algorithm,omitempty"`

	// Size in bits: 256 or 384 for ECDSA (default 256), 2048, 3072 or 4096 for RSA (default 2048).
	// +optional
	Size int32 `json:"size,omitempty"`
}

// Workload kinds a certificate can be injected into.
const (
	InjectKindDeployment  = "Deployment"
	InjectKindStatefulSet = "StatefulSet"
	InjectKindDaemonSet   = "DaemonSet"
)

// InjectTarget delivers the certificate into one workload of the Certificate's namespace.
// +kubebuilder:validation:XValidation:rule="has(self.env) != has(self.mountPath)",message="set exactly one of env or mountPath"
type InjectTarget struct {
	// Kind of the workload.
	// +required
	// +kubebuilder:validation:Enum=Deployment;StatefulSet;DaemonSet
	Kind string `json:"kind"`

	// Name of the workload, in the Certificate's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Container to inject into. Default: every container of the pod template.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Container string `json:"container,omitempty"`

	// Env is the name of an environment variable that receives the PEM bundle (key, leaf and
	// chain) through a secretKeyRef to the Secret's "bundle.pem"; the value itself never
	// appears in the workload.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	Env string `json:"env,omitempty"`

	// MountPath is where the Secret is mounted read-only ("tls.crt", "tls.key", "ca.crt",
	// "bundle.pem").
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/`
	MountPath string `json:"mountPath,omitempty"`

	// Rollout says whether a new certificate rolls the workload. Always writes the
	// certificate's serial into a pod-template annotation ("certpilot.dev/serial-<certificate>"),
	// so each issuance or renewal starts new pods; Never leaves the pods alone. Default: Always
	// for env (a variable is read only when the container starts), Never for mountPath (the
	// kubelet refreshes mounted Secrets in place; the workload reloads the files itself).
	// +optional
	// +kubebuilder:validation:Enum=Always;Never
	Rollout string `json:"rollout,omitempty"`
}

// Rollout policies of an InjectTarget.
const (
	RolloutAlways = "Always"
	RolloutNever  = "Never"
)

// Condition types of a Certificate. Ready, Reconciling and Stalled follow kstatus, so
// `kubectl wait --for=condition=Ready`, Argo CD and Flux understand them.
const (
	// ConditionReady is True when the Secret holds a valid certificate matching the spec.
	ConditionReady = "Ready"
	// ConditionIssuing is True while an order is in progress.
	ConditionIssuing = "Issuing"
	// ConditionReconciling is True while the controller works towards the spec (kstatus).
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when the controller cannot progress without a change (kstatus).
	ConditionStalled = "Stalled"
	// ConditionInjected is True when every spec.inject entry is in its workload. Injection
	// problems are reported here and never turn a valid certificate's Ready to False.
	ConditionInjected = "Injected"
)

// Annotations users and tools set on a Certificate.
const (
	// AnnotationRenew requests a renewal now; set it to any new value (for example a
	// timestamp). `kubectl certpilot renew` sets it.
	AnnotationRenew = "certpilot.dev/renew"
)

// CertificateStatus is the observed state of a Certificate.
type CertificateStatus struct {
	// Conditions: Ready, Issuing, Reconciling, Stalled, Injected.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// ObservedGeneration is the generation of the spec the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// NotBefore is the start of the current certificate's validity.
	// +optional
	NotBefore *metav1.Time `json:"notBefore,omitempty"`

	// NotAfter is when the current certificate expires.
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`

	// RenewalTime is when certpilot will renew the current certificate.
	// +optional
	RenewalTime *metav1.Time `json:"renewalTime,omitempty"`

	// RenewalTimeSource says where renewalTime came from: "ari", a moment inside the window the
	// CA suggests (ACME Renewal Information, RFC 9773), or "fallback", notAfter minus
	// min(renewBefore, a third of the lifetime), a little earlier by a per-certificate jitter.
	// +optional
	// +kubebuilder:validation:Enum=ari;fallback
	RenewalTimeSource string `json:"renewalTimeSource,omitempty"`

	// RenewalInfo is the CA's suggested renewal window for the current certificate, when the CA
	// publishes ACME Renewal Information and the issuer does not turn it off.
	// +optional
	RenewalInfo *RenewalInfoStatus `json:"renewalInfo,omitempty"`

	// AutoRenewable is true when certpilot renews the certificate without a person: false only
	// for the dns01 manual solver.
	// +optional
	AutoRenewable *bool `json:"autoRenewable,omitempty"`

	// SerialNumber of the current certificate, in hexadecimal.
	// +optional
	SerialNumber string `json:"serialNumber,omitempty"`

	// Revision counts the certificates certpilot stored for this Certificate: 1 after the first
	// issuance, one more after each renewal or reissue (as cert-manager's status.revision).
	// Each revision has its own private key. Certificates issued by versions before this field
	// are not counted.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Revision int64 `json:"revision,omitempty"`

	// IssuerRef names the issuer that issued the certificate in the Secret: spec.issuerRef or one
	// of spec.fallbackIssuerRefs.
	// +optional
	IssuerRef *IssuerReference `json:"issuerRef,omitempty"`

	// CurrentIssuer is the issuer the issuance in progress uses, with its failures there; unset
	// between issuances (the next one starts at spec.issuerRef).
	// +optional
	CurrentIssuer *CurrentIssuerStatus `json:"currentIssuer,omitempty"`

	// FailedIssuanceAttempts counts issuance failures since the last success; it sets the
	// backoff (about 1m, 10m, 100m, then daily).
	// +optional
	FailedIssuanceAttempts int32 `json:"failedIssuanceAttempts,omitempty"`

	// LastFailureTime is when issuance last failed.
	// +optional
	LastFailureTime *metav1.Time `json:"lastFailureTime,omitempty"`

	// LastFailureReason is why issuance last failed (OrderInvalid, CASlowDown, ...). After a
	// failure the CA decided (a validation or an order it marked invalid, a rate limit), a
	// change of the spec or of the renew annotation does not lift the backoff within a day.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	LastFailureReason string `json:"lastFailureReason,omitempty"`

	// NextAttemptTime is set when the CA asked to slow down (429 or 503, with or without a
	// Retry-After): nothing is sent to the CA for this certificate before then, not even to
	// resume an open order. Cleared when a certificate is stored.
	// +optional
	NextAttemptTime *metav1.Time `json:"nextAttemptTime,omitempty"`

	// RenewalRequest is the value of the certpilot.dev/renew annotation last acted on.
	// +optional
	RenewalRequest string `json:"renewalRequest,omitempty"`

	// Order is the ACME order in progress (or the last one).
	// +optional
	Order *OrderStatus `json:"order,omitempty"`

	// Injected lists the workloads certpilot may have written into for spec.inject, recorded
	// before each write, so that a removed entry is undone even after a restart.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Injected []InjectedWorkload `json:"injected,omitempty"`
}

// CurrentIssuerStatus is the issuer an issuance uses now (spec.issuerRef or one of
// spec.fallbackIssuerRefs) and how it fared there.
type CurrentIssuerStatus struct {
	// Kind of the issuer: Issuer or ClusterIssuer.
	// +required
	Kind string `json:"kind"`

	// Name of the issuer.
	// +required
	Name string `json:"name"`

	// FailedAttempts counts the failed attempts in a row at this issuer.
	// +optional
	// +kubebuilder:validation:Minimum=0
	FailedAttempts int32 `json:"failedAttempts,omitempty"`

	// Since is when the issuance moved to this issuer.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// Reason is why the issuance moved to this issuer from the one before it: Outage,
	// RateLimited or Failures (empty for spec.issuerRef at the start of an issuance).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`
}

// InjectedWorkload names a workload of the Certificate's namespace that certpilot injected
// the certificate into.
type InjectedWorkload struct {
	// Kind of the workload: Deployment, StatefulSet or DaemonSet.
	// +required
	Kind string `json:"kind"`

	// Name of the workload.
	// +required
	Name string `json:"name"`
}

// RenewalInfoStatus is the CA's suggested renewal window (RFC 9773) as last fetched.
type RenewalInfoStatus struct {
	// WindowStart and WindowEnd bound the window the CA suggests.
	// +optional
	WindowStart *metav1.Time `json:"windowStart,omitempty"`
	// +optional
	WindowEnd *metav1.Time `json:"windowEnd,omitempty"`
	// ExplanationURL is the CA's page about the window, when it gives one (for example after a
	// mass revocation).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	ExplanationURL string `json:"explanationURL,omitempty"`
	// NextFetch is when certpilot asks the CA again (as its Retry-After says, between one
	// minute and twelve hours), as of the last change of this status. A fetch that finds the
	// same window is not written (no status write per poll): certpilot keeps the next time in
	// memory, so a time in the past means the window was confirmed since. Setting it to the
	// past makes certpilot fetch at the Certificate's next reconcile.
	// +optional
	NextFetch *metav1.Time `json:"nextFetch,omitempty"`
	// Error is why the last fetch failed; the fallback renewal time stands meanwhile.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Error string `json:"error,omitempty"`
}

// OrderStatus records an ACME order, written before any challenge is touched so a restarted
// controller resumes it instead of opening another.
type OrderStatus struct {
	// URL of the order at the ACME server.
	// +required
	URL string `json:"url"`

	// State of the order: pending, ready, processing, valid or invalid.
	// +optional
	State string `json:"state,omitempty"`

	// DNSNames the order was created for.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=253
	DNSNames []string `json:"dnsNames,omitempty"`

	// IPAddresses the order was created for.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=39
	IPAddresses []string `json:"ipAddresses,omitempty"`

	// Challenges, one per name.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Challenges []ChallengeStatus `json:"challenges,omitempty"`
}

// ChallengeStatus is the state of one name's challenge: a DNS name's or an IP address's.
type ChallengeStatus struct {
	// DNSName being validated (unset for an IP address).
	// +optional
	DNSName string `json:"dnsName,omitempty"`

	// IPAddress being validated (unset for a DNS name).
	// +optional
	// +kubebuilder:validation:MaxLength=39
	IPAddress string `json:"ipAddress,omitempty"`

	// Type of the challenge: tls-alpn-01, http-01 or dns-01.
	// +required
	Type string `json:"type"`

	// URL of the challenge at the ACME server.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url,omitempty"`

	// Token of the challenge (public: http-01 serves it in the URL path).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Token string `json:"token,omitempty"`

	// State: pending, processing, valid or invalid, as the ACME server reports it, or
	// "presented"/"self-check-failed" before the CA is asked to validate.
	// +optional
	State string `json:"state,omitempty"`

	// Reason is the last error or the action a person must take (for dns01 manual: the TXT
	// record to create).
	// +optional
	Reason string `json:"reason,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cpcert;cpcerts,categories=certpilot
// +kubebuilder:printcolumn:name="Subject",type=string,JSONPath=`.spec.dnsNames[0]`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.notAfter`
// +kubebuilder:printcolumn:name="Auto-Renew",type=boolean,JSONPath=`.status.autoRenewable`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.spec.secretName`
// +kubebuilder:printcolumn:name="Renewal",type=string,JSONPath=`.status.renewalTime`,priority=1
// +kubebuilder:printcolumn:name="Issuer",type=string,JSONPath=`.spec.issuerRef.name`,priority=1
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Certificate asks certpilot to obtain a certificate from an ACME CA, keep it in a Secret, hand
// it to workloads and renew it before it expires.
type Certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec CertificateSpec `json:"spec"`
	// +optional
	Status CertificateStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// CertificateList is a list of Certificates.
type CertificateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Certificate `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Certificate{}, &CertificateList{})
}
