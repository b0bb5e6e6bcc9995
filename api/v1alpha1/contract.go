package v1alpha1

import "strings"

// The load balancer contract: how certpilot hands challenge responses to the load balancer that
// owns ports 443 and 80 for a certificate's names. certpilot's edge honours it; any load balancer
// that reads the same Secret (through the API or as a mounted volume) can.
//
// One Secret per load balancer Deployment, named ChallengeSecretName(deployment), in the
// Deployment's namespace, labelled LabelManagedBy=ManagedByValue and LabelChallenges="true".
// Its keys:
//
//	tls-alpn-01.<dnsName>.pem  the tls-alpn-01 challenge certificate for <dnsName> (RFC 8737),
//	                           PEM: the certificate, then its private key ("PRIVATE KEY").
//	                           Served only to handshakes that offer ALPN "acme-tls/1" with SNI
//	                           <dnsName>; never to ordinary handshakes.
//	http-01.<token>            the http-01 key authorization, served as the body of
//	                           GET /.well-known/acme-challenge/<token> on port 80.
//
// Several Certificates share one Secret; each adds and removes only its own keys.
const (
	// LabelManagedBy marks objects certpilot creates and owns.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is LabelManagedBy's value on certpilot's objects.
	ManagedByValue = "certpilot"
	// LabelChallenges marks a load balancer's challenge Secret.
	LabelChallenges = "certpilot.dev/challenges"
	// LabelCertificate names the Certificate a certificate Secret belongs to.
	LabelCertificate = "certpilot.dev/certificate"

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
)

// ChallengeSecretName is the name of a load balancer Deployment's challenge Secret.
func ChallengeSecretName(deployment string) string {
	return deployment + ChallengeSecretSuffix
}

// TLSALPN01Key is the challenge Secret key of dnsName's tls-alpn-01 certificate.
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
		name = strings.TrimSuffix(strings.TrimPrefix(key, TLSALPN01KeyPrefix), TLSALPN01KeySuffix)
		return "tls-alpn-01", name, name != ""
	case strings.HasPrefix(key, HTTP01KeyPrefix):
		name = strings.TrimPrefix(key, HTTP01KeyPrefix)
		return "http-01", name, name != ""
	}
	return "", "", false
}
