package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Solver says how certpilot proves control of a certificate's names to the ACME server. Exactly
// one challenge type is set. A Certificate's solver wins over its issuer's default solver.
// +kubebuilder:validation:XValidation:rule="[has(self.tlsALPN01), has(self.http01), has(self.dns01)].exists_one(x, x)",message="set exactly one solver: tlsALPN01, http01 or dns01"
type Solver struct {
	// TLSALPN01 answers the tls-alpn-01 challenge (RFC 8737) on the load balancer's TLS port 443:
	// the validator connects with ALPN "acme-tls/1" and the load balancer presents a challenge
	// certificate. It cannot validate wildcard names.
	// +optional
	TLSALPN01 *TLSALPN01Solver `json:"tlsALPN01,omitempty"`

	// HTTP01 answers the http-01 challenge on the load balancer's plain HTTP port 80 at
	// /.well-known/acme-challenge/<token>. It cannot validate wildcard names.
	// +optional
	HTTP01 *HTTP01Solver `json:"http01,omitempty"`

	// DNS01 answers the dns-01 challenge with a TXT record at _acme-challenge.<name>. It is the
	// only solver that validates wildcard names.
	// +optional
	DNS01 *DNS01Solver `json:"dns01,omitempty"`
}

// NamedSolver is a solver for some of a Certificate's names.
// +kubebuilder:validation:XValidation:rule="[has(self.tlsALPN01), has(self.http01), has(self.dns01)].exists_one(x, x)",message="set exactly one solver: tlsALPN01, http01 or dns01"
// +kubebuilder:validation:XValidation:rule="has(self.dnsNames) || has(self.ipAddresses)",message="a named solver lists at least one of dnsNames or ipAddresses"
type NamedSolver struct {
	// DNSNames this solver validates, each written exactly as in spec.dnsNames.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=253
	DNSNames []string `json:"dnsNames,omitempty"`

	// IPAddresses this solver validates, each written exactly as in spec.ipAddresses. Only
	// http01 and tlsALPN01 validate IP addresses.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=39
	IPAddresses []string `json:"ipAddresses,omitempty"`

	Solver `json:",inline"`
}

// TLSALPN01Solver serves tls-alpn-01 challenge certificates through a load balancer.
type TLSALPN01Solver struct {
	// LoadBalancer is the Deployment that owns port 443 for the certificate's names. certpilot
	// writes challenge certificates into the Secret "<name>-acme-challenges" in its namespace and
	// mounts that Secret into the Deployment.
	// +required
	LoadBalancer LoadBalancerRef `json:"loadBalancer"`

	// ProbeAddress is the host:port the controller dials to check that the challenge is really
	// served before it asks the CA to validate. Default: the name itself on port 443.
	// +optional
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^[^\s:/]+:[0-9]{1,5}$|^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$`
	ProbeAddress string `json:"probeAddress,omitempty"`
}

// HTTP01Solver serves http-01 challenge tokens through a load balancer.
type HTTP01Solver struct {
	// LoadBalancer is the Deployment that owns port 80 for the certificate's names. certpilot
	// writes the key authorizations into the Secret "<name>-acme-challenges" in its namespace and
	// mounts that Secret into the Deployment.
	// +required
	LoadBalancer LoadBalancerRef `json:"loadBalancer"`

	// ProbeAddress is the host:port the controller sends its self-check GET to before it asks the
	// CA to validate. Default: the name itself on port 80.
	// +optional
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^[^\s:/]+:[0-9]{1,5}$|^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$`
	ProbeAddress string `json:"probeAddress,omitempty"`
}

// LoadBalancerRef names the Deployment of the load balancer that serves challenge responses.
type LoadBalancerRef struct {
	// Name of the Deployment.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Namespace of the Deployment. Default: the namespace of the Certificate (or Issuer).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`
}

// DNS01Solver proves control of names through DNS: dns-01 TXT records created by hand or
// through RFC 2136 dynamic updates, or one persistent dns-persist-01 record per name.
// +kubebuilder:validation:XValidation:rule="[has(self.manual), has(self.rfc2136), has(self.persist)].exists_one(x, x)",message="set exactly one dns01 provider: manual, rfc2136 or persist"
// +kubebuilder:validation:XValidation:rule="!has(self.cnameStrategy) || self.cnameStrategy == 'None' || has(self.rfc2136)",message="cnameStrategy Follow applies to rfc2136 only"
type DNS01Solver struct {
	// Manual asks a person to create the TXT records: the Certificate's status and Events give
	// the exact record, and the controller waits until it is visible. Certificates using it are
	// not auto-renewable.
	// +optional
	Manual *ManualDNS01 `json:"manual,omitempty"`

	// RFC2136 creates and removes the TXT records with TSIG-signed dynamic updates (RFC 2136)
	// on an authoritative name server such as BIND.
	// +optional
	RFC2136 *RFC2136DNS01 `json:"rfc2136,omitempty"`

	// Persist answers the dns-persist-01 challenge (draft-ietf-acme-dns-persist): the zone's
	// owner creates one TXT record per name, "_validation-persist.<name>", that names the CA and
	// the issuer's ACME account; certpilot shows the exact record, checks it read-only and then
	// issues and renews with no DNS credentials, wildcards included. The record lets that
	// account obtain any certificate for the name until it is removed or its persistUntil
	// passes: protect the account key.
	// +optional
	Persist *PersistDNS01 `json:"persist,omitempty"`

	// Nameservers (host:port) the controller asks to see a TXT record before it asks the CA to
	// validate. Default: for rfc2136, every authoritative nameserver of the zone, found by an NS
	// lookup at its nameserver (with nameservers set, the NS lookup goes to them); for persist,
	// the zone's authoritative nameservers found through the system resolver; for manual, the
	// system resolver.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:items:MaxLength=261
	// +kubebuilder:validation:items:Pattern=`^[^\s:/]+:[0-9]{1,5}$|^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$`
	Nameservers []string `json:"nameservers,omitempty"`

	// CNAMEStrategy says whether a CNAME at "_acme-challenge.<name>" is followed (rfc2136 only):
	// Follow updates the TXT record at the CNAME's target, in the zone it is delegated to (a zone
	// the RFC 2136 server accepts updates for), as validators follow the CNAME too. None
	// (default) updates "_acme-challenge.<name>" itself.
	// +optional
	// +kubebuilder:validation:Enum=None;Follow
	CNAMEStrategy string `json:"cnameStrategy,omitempty"`
}

// CNAME strategies of a DNS01Solver.
const (
	CNAMEStrategyNone   = "None"
	CNAMEStrategyFollow = "Follow"
)

// ManualDNS01 has no settings yet: the user creates the records that status names.
type ManualDNS01 struct{}

// PersistDNS01 configures the dns-persist-01 record certpilot asks for and checks.
type PersistDNS01 struct {
	// PersistUntil, when set, is added to the record as "persistuntil=<unix time>": the CA
	// stops accepting the record after it. certpilot warns (condition PersistRecordExpiring,
	// metric certpilot_dns_persist_until_timestamp_seconds) when it passes before the next
	// renewal, and refuses to ask for validation once it has passed.
	// +optional
	PersistUntil *metav1.Time `json:"persistUntil,omitempty"`
}

// Condition types the dns01 persist solver sets on a Certificate.
const (
	// ConditionPersistRecordExpiring is True when a dns-persist-01 record's persistuntil passes
	// before the certificate's next renewal: the record must be renewed in time.
	ConditionPersistRecordExpiring = "PersistRecordExpiring"
)

// RFC2136DNS01 configures dynamic DNS updates.
type RFC2136DNS01 struct {
	// Nameserver is the host:port of the authoritative server that accepts the updates.
	// +required
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^[^\s:/]+:[0-9]{1,5}$|^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$`
	Nameserver string `json:"nameserver"`

	// TSIGKeyName is the name of the TSIG key the server knows, for example "certpilot.".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	TSIGKeyName string `json:"tsigKeyName"`

	// TSIGAlgorithm is the TSIG HMAC algorithm, in the API's spelling (HMACSHA256) or as BIND's
	// key blocks and nsupdate write it (hmac-sha256).
	// +optional
	// +kubebuilder:default=HMACSHA256
	// +kubebuilder:validation:Enum=HMACSHA1;HMACSHA224;HMACSHA256;HMACSHA384;HMACSHA512;hmac-sha1;hmac-sha224;hmac-sha256;hmac-sha384;hmac-sha512
	TSIGAlgorithm string `json:"tsigAlgorithm,omitempty"`

	// TSIGSecretRef names the Secret key holding the base64 TSIG secret, in the namespace of the
	// Certificate; for an issuer's default solver, in the Issuer's namespace, or for a
	// ClusterIssuer in the controller's (--cluster-resource-namespace).
	// +required
	TSIGSecretRef SecretKeySelector `json:"tsigSecretRef"`
}

// SecretReference names a Secret in the namespace of the object that holds the reference.
type SecretReference struct {
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// SecretKeySelector names one key of a Secret in the namespace of the object that holds it.
type SecretKeySelector struct {
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key within the Secret's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}
