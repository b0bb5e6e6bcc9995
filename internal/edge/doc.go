// Package edge is certpilot's edge: the process that owns a load balancer's ports 443 and 80 and
// honours the challenge Secret contract of api/v1alpha1 (see contract.go there).
//
// It is built from small parts so that it can grow into the full load balancer:
//
//   - ChallengeStore holds the challenge responses: tls-alpn-01 certificates by DNS name and
//     http-01 key authorizations by token. The challenge Secret is the truth; every update
//     replaces the whole set.
//   - Sources feed the store: SecretSource watches one Secret through the API, DirSource reads the
//     same keys from a mounted volume.
//   - NewTLSConfig answers handshakes that offer ALPN "acme-tls/1" with the challenge certificate
//     and every other handshake with a certificate from a CertificateSource
//     (StaticCertificates for now; Secrets and files later).
//   - NewHTTPHandler answers http-01 requests on port 80.
//   - Server runs the listeners, readiness and graceful shutdown.
//
// Nothing in this package logs key material, key authorizations or tokens.
package edge
