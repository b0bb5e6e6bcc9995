package v1alpha1

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// The load balancer contract: how certpilot hands challenge responses to the load balancer that
// owns ports 443 and 80 for a certificate's names. certpilot's edge honours it; any load balancer
// that reads the same Secrets (through the API or as one mounted volume) can. The whole contract,
// with the upgrade from the single Secret of earlier versions, is docs/load-balancer-contract.md.
//
// ChallengeShards Secrets per load balancer Deployment, named ChallengeShardName(deployment, i)
// for i in [0, ChallengeShards), in the Deployment's namespace, labelled
// LabelManagedBy=ManagedByValue, LabelChallenges="true" and LabelLoadBalancer=<deployment>. A
// response lives in the shard ChallengeShard(key) of its key, so a write touches one small
// Secret whatever the number of certificates being validated; certpilot mounts all shards as one
// projected volume at ChallengeVolumeMountPath (keys never repeat across shards), so the
// Deployment is patched once. Shards that hold nothing yet may not exist. Keys:
//
//	tls-alpn-01.<dnsName>.pem  the tls-alpn-01 challenge certificate for <dnsName> (RFC 8737),
//	                           PEM: the certificate, then its private key ("PRIVATE KEY").
//	                           Served only to handshakes that offer ALPN "acme-tls/1" with SNI
//	                           <dnsName>; never to ordinary handshakes. For an IP address
//	                           (RFC 8738) <dnsName> is its reverse-DNS name, the SNI its
//	                           validator sends ("1.2.0.192.in-addr.arpa", or 32 nibbles and
//	                           "ip6.arpa"), and the certificate names the IP address as its
//	                           only iPAddress subject alternative name.
//	http-01.<token>            the http-01 key authorization, served as the body of
//	                           GET /.well-known/acme-challenge/<token> on port 80.
//
// Each key's writer is recorded in the shard's annotation ChallengeOwnerAnnotation(key)
// ("<namespace>/<name>" of the Certificate): a Certificate removes only its own keys, and a
// tls-alpn-01 name held by one Certificate is not taken by another until it is released (a load
// balancer serves one challenge certificate per name).
//
// Earlier versions kept every response in one Secret, ChallengeSecretName(deployment), read and
// rewritten whole on every change. While that Secret exists certpilot writes each response there
// too, so a load balancer still mounting it keeps working; delete it once every replica reads the
// shards.
const (
	// LabelManagedBy marks objects certpilot creates and owns.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is LabelManagedBy's value on certpilot's objects.
	ManagedByValue = "certpilot"
	// LabelChallenges marks a load balancer's challenge Secret.
	LabelChallenges = "certpilot.dev/challenges"
	// LabelLoadBalancer names the load balancer Deployment of a challenge shard.
	LabelLoadBalancer = "certpilot.dev/load-balancer"
	// AnnotationAllowedNamespaces, on a load balancer Deployment, lists the namespaces
	// (comma-separated, or "*") whose Certificates may publish challenge responses through it.
	// Without it only Certificates of the Deployment's own namespace, and solvers of a
	// ClusterIssuer, may.
	AnnotationAllowedNamespaces = "certpilot.dev/allowed-namespaces"
	// AnnotationProbeAddresses, on a load balancer Deployment, lists the probeAddress values
	// (comma-separated host:port) that Certificates and namespaced Issuers may ask the
	// controller to dial for their self-checks. A ClusterIssuer's solver may name any.
	AnnotationProbeAddresses = "certpilot.dev/probe-addresses"
	// ChallengeOwnerAnnotationPrefix starts the shard annotations that name each key's writer.
	ChallengeOwnerAnnotationPrefix = "owner.challenges.certpilot.dev/"
	// ChallengeShards is the number of challenge shard Secrets per load balancer.
	ChallengeShards = 32

	// LabelCertificate names the Certificate a certificate Secret belongs to.
	LabelCertificate = "certpilot.dev/certificate"
	// LabelClaim marks a claim Secret (value "true"): it reserves a secretName and holds the
	// private key of a certificate not issued yet. Readers of certificate Secrets (the edge)
	// exclude it with the selector "!certpilot.dev/claim".
	LabelClaim = "certpilot.dev/claim"

	// ChallengeSecretSuffix is appended to the load balancer Deployment's name.
	ChallengeSecretSuffix = "-acme-challenges"
	// TLSALPN01KeyPrefix starts the challenge Secret keys of tls-alpn-01 certificates.
	TLSALPN01KeyPrefix = "tls-alpn-01."
	// TLSALPN01KeySuffix ends them.
	TLSALPN01KeySuffix = ".pem"
	// HTTP01KeyPrefix starts the challenge Secret keys of http-01 key authorizations.
	HTTP01KeyPrefix = "http-01."

	// ChallengeVolumeMountPath is where certpilot mounts the challenge Secret into the load
	// balancer's containers.
	ChallengeVolumeMountPath = "/var/run/certpilot/challenges"

	// BundleKey is the certificate Secret key holding key, leaf and chain in one PEM.
	BundleKey = "bundle.pem"

	// NextKeySecretSuffix ends the names of the Secrets in which versions before the claim kept
	// the private key of the order being finalized. certpilot no longer reads or writes them;
	// the suffix stays reserved (a secretName may not end in it).
	NextKeySecretSuffix = "-certpilot-next-key"
	// ClaimSecretSuffix is appended to a secretName for the Secret that reserves it for one
	// Certificate before an order is created, and holds the private key of the next
	// certificate (data tls.key).
	ClaimSecretSuffix = "-certpilot-claim"
)

// ChallengeSecretName is the name of the single challenge Secret of earlier versions (see the
// contract above: written as well while it exists).
func ChallengeSecretName(deployment string) string {
	return deployment + ChallengeSecretSuffix
}

// ChallengeShardName is the name of a load balancer Deployment's challenge shard i.
func ChallengeShardName(deployment string, i int) string {
	return fmt.Sprintf("%s%s-%02d", deployment, ChallengeSecretSuffix, i)
}

// ChallengeShard is the shard that holds key.
func ChallengeShard(key string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % ChallengeShards)
}

// ChallengeOwnerAnnotation is the shard annotation that names the writer of key. Keys can be
// longer than an annotation name allows, so the name is a hash of the key.
func ChallengeOwnerAnnotation(key string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return fmt.Sprintf("%s%016x", ChallengeOwnerAnnotationPrefix, h.Sum64())
}

// TLSALPN01Key is the challenge Secret key of dnsName's tls-alpn-01 certificate: dnsName is the
// server name the validator sends (for an IP address, its reverse-DNS name).
func TLSALPN01Key(dnsName string) string {
	return TLSALPN01KeyPrefix + strings.ToLower(dnsName) + TLSALPN01KeySuffix
}

// HTTP01Key is the challenge Secret key of token's http-01 key authorization.
func HTTP01Key(token string) string {
	return HTTP01KeyPrefix + token
}

// ParseChallengeKey tells what a challenge Secret key holds: ("tls-alpn-01", dnsName) or
// ("http-01", token); ok is false for any other key.
func ParseChallengeKey(key string) (challengeType, name string, ok bool) {
	switch {
	case strings.HasPrefix(key, TLSALPN01KeyPrefix) && strings.HasSuffix(key, TLSALPN01KeySuffix):
		// The prefix and the suffix share the dot of "tls-alpn-01.pem": that key names nothing.
		if len(key) <= len(TLSALPN01KeyPrefix)+len(TLSALPN01KeySuffix) {
			return "", "", false
		}
		name = key[len(TLSALPN01KeyPrefix) : len(key)-len(TLSALPN01KeySuffix)]
		return "tls-alpn-01", name, true
	case strings.HasPrefix(key, HTTP01KeyPrefix):
		name = strings.TrimPrefix(key, HTTP01KeyPrefix)
		return "http-01", name, name != ""
	}
	return "", "", false
}
