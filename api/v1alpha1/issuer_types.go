package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IssuerSpec is shared by Issuer and ClusterIssuer: one ACME account on one ACME server.
type IssuerSpec struct {
	// ACME configures the ACME account this issuer uses.
	// +required
	ACME ACMEIssuer `json:"acme"`

	// Solver is the default solver of the certificates that name this issuer and set none.
	// +optional
	Solver *Solver `json:"solver,omitempty"`

	// Policy says which namespaces may use a ClusterIssuer, and for which names: an
	// administrator's grant that tenants cannot change. Unset: every namespace, any name. Only a
	// ClusterIssuer has one (an Issuer serves its own namespace only). See docs/tenancy.md.
	// +optional
	Policy *IssuerPolicy `json:"policy,omitempty"`
}

// AnnotationAllowedDNSZones is the Namespace annotation by which an administrator grants a
// namespace DNS zones, for ClusterIssuers whose policy sets namespaceDNSZones: Require. Its
// value is a comma-separated list of zones ("team-a.example.com, team-a.example.net"); a zone
// grants itself and every name under it, wildcards included.
const AnnotationAllowedDNSZones = "certpilot.dev/allowed-dns-zones"

// Values of IssuerPolicy.NamespaceDNSZones.
const (
	NamespaceDNSZonesIgnore  = "Ignore"
	NamespaceDNSZonesRequire = "Require"
)

// IssuerPolicy is a ClusterIssuer's grant: which namespaces may use it and which names each may
// request. It is checked before any ACME order, for every solver, and for Certificates generated
// from Ingresses and Gateways alike; a refused Certificate is Stalled with the rule's name.
// The rules bound the label selector's lists, whose type is Kubernetes' own and carries no bounds
// (CEL cannot afford to look inside them; Decide refuses a selector Kubernetes cannot parse).
// +kubebuilder:validation:XValidation:rule="!has(self.namespaceSelector) || !has(self.namespaceSelector.matchLabels) || size(self.namespaceSelector.matchLabels) <= 16",message="policy.namespaceSelector.matchLabels has at most 16 labels"
// +kubebuilder:validation:XValidation:rule="!has(self.namespaceSelector) || !has(self.namespaceSelector.matchExpressions) || size(self.namespaceSelector.matchExpressions) <= 16",message="policy.namespaceSelector.matchExpressions has at most 16 requirements"
type IssuerPolicy struct {
	// NamespaceSelector selects, by their labels, the namespaces whose Certificates may use
	// this ClusterIssuer. Unset or empty: every namespace. Namespace labels are set by
	// administrators (tenants with rights in a namespace cannot edit the Namespace object).
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// DNSZones limits the names every namespace may request to these zones: a zone grants
	// itself and every name under it, wildcards included. Unset: any name.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:XValidation:rule=`self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')`,message="a DNS zone is a lowercase DNS name such as example.com (no wildcard, no trailing dot)"
	DNSZones []string `json:"dnsZones,omitempty"`

	// NamespaceDNSZones says whether a namespace's own grant limits its names too: Require
	// limits each namespace to the zones its Namespace's annotation certpilot.dev/allowed-dns-zones
	// lists (a namespace without the annotation may request no name); Ignore (the default) does
	// not read the annotation.
	// +optional
	// +kubebuilder:validation:Enum=Ignore;Require
	// +kubebuilder:default=Ignore
	NamespaceDNSZones string `json:"namespaceDNSZones,omitempty"`
}

// ACMEIssuer is an account on an ACME server (RFC 8555).
type ACMEIssuer struct {
	// Server is the ACME directory URL, for example Let's Encrypt's staging
	// https://acme-staging-v02.api.letsencrypt.org/directory or production
	// https://acme-v02.api.letsencrypt.org/directory.
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''",message="server must be an https:// ACME directory URL"
	Server string `json:"server"`

	// Email is the account's contact address, used by the CA for expiry and policy notices.
	// +optional
	// +kubebuilder:validation:MaxLength=254
	// +kubebuilder:validation:Pattern=`^[^@\s]+@[^@\s]+$`
	Email string `json:"email,omitempty"`

	// PrivateKeySecretRef names the Secret whose key "tls.key" holds the account's private key
	// (PEM). certpilot creates the Secret with a new key when it is absent; it never replaces a
	// key that exists but cannot be read (the issuer reports that instead). For an Issuer the
	// Secret is in the Issuer's namespace; for a ClusterIssuer in the controller's namespace.
	// +required
	PrivateKeySecretRef SecretReference `json:"privateKeySecretRef"`

	// CABundle is PEM-encoded CA certificates trusted for the ACME server's HTTPS, for private
	// ACME servers such as Pebble or step-ca, at most 64 KiB. Default: the system's trust store.
	// +optional
	// +kubebuilder:validation:MaxLength=87384
	// +kubebuilder:validation:XValidation:rule="size(self) <= 65536",message="caBundle holds at most 64 KiB of PEM certificates"
	CABundle []byte `json:"caBundle,omitempty"`

	// ExternalAccountBinding binds the new account to an account the CA already knows (RFC 8555
	// section 7.3.4), as ZeroSSL, Google Trust Services and many private CAs require.
	// +optional
	ExternalAccountBinding *ExternalAccountBinding `json:"externalAccountBinding,omitempty"`

	// Profile is the ACME profile to request in new orders, for example "classic", "tlsserver"
	// or "shortlived" at Let's Encrypt. Default: the server's default.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9][-_.a-zA-Z0-9]*$`
	Profile string `json:"profile,omitempty"`

	// DisableRenewalInfo turns off ACME Renewal Information (RFC 9773): certificates then renew
	// at the fallback time only, and renewal orders do not name the certificate they replace.
	// Default: ARI is used when the server publishes it.
	// +optional
	DisableRenewalInfo bool `json:"disableRenewalInfo,omitempty"`
}

// ExternalAccountBinding holds the CA-issued key identifier and the Secret with its MAC key.
type ExternalAccountBinding struct {
	// KeyID is the key identifier the CA issued.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	KeyID string `json:"keyID"`

	// KeySecretRef names the Secret key holding the base64url-encoded HMAC key the CA issued.
	// +required
	KeySecretRef SecretKeySelector `json:"keySecretRef"`
}

// IssuerStatus is the observed state of an Issuer or ClusterIssuer.
type IssuerStatus struct {
	// Conditions: Ready is True when the ACME account is registered and usable.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// AccountURI is the URI of the registered ACME account.
	// +optional
	AccountURI string `json:"accountURI,omitempty"`

	// ObservedGeneration is the generation of the spec the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// OrdersPausedUntil is when Certificates may create new orders with this issuer's ACME
	// account again, after the CA answered rateLimited: the account-wide pause, at most 15
	// minutes after the answer (docs/tenancy.md). Recorded here, once per pause and never per
	// Certificate, so that a restarted manager or another replica taking over keeps it.
	// +optional
	OrdersPausedUntil *metav1.Time `json:"ordersPausedUntil,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cpissuer,categories=certpilot
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.acme.server`,priority=1
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Issuer is an ACME account that Certificates in its own namespace can use.
// +kubebuilder:validation:XValidation:rule="!has(self.spec.policy)",message="spec.policy is for ClusterIssuers: an Issuer serves only its own namespace"
type Issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec IssuerSpec `json:"spec"`
	// +optional
	Status IssuerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// IssuerList is a list of Issuers.
type IssuerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Issuer `json:"items"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cpclusterissuer,categories=certpilot
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.acme.server`,priority=1
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ClusterIssuer is an ACME account that Certificates in every namespace can use. The Secrets it
// names live in the controller's namespace.
type ClusterIssuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec IssuerSpec `json:"spec"`
	// +optional
	Status IssuerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ClusterIssuerList is a list of ClusterIssuers.
type ClusterIssuerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterIssuer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Issuer{}, &IssuerList{}, &ClusterIssuer{}, &ClusterIssuerList{})
}
