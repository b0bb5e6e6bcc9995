// Package edge is certpilot's edge: the load balancer that owns ports 443 and 80 for a set of
// names, honours the challenge Secret contract of api/v1alpha1 (see contract.go there), serves
// the issued certificates by SNI and carries traffic on to upstreams. docs/edge.md is its user
// documentation.
//
// Parts, one concern a file:
//
//   - ChallengeStore (store.go) holds the challenge responses; SecretSource and DirSource feed
//     it from the challenge Secret, through the API or as a mounted volume.
//   - CertificateStore (certificates.go) serves ordinary certificates by SNI (exact, then
//     wildcard, then default) from sets that CertificateSecretSource (certsecrets.go: only
//     what certpilot issued for a name, judged in issued.go), CertificateDirSource
//     (certsources.go) and ParseBundles (bundle.go, SSL_CERTS) give it; every change swaps an
//     immutable index, so reloads never block a handshake nor touch open connections.
//   - NewTLSConfig (tlsconfig.go) answers ALPN "acme-tls/1" with challenge certificates only,
//     and every other handshake from a CertificateSource only.
//   - Routes (routes.go) is the hot-reloaded route file; the terminate proxy (proxy.go,
//     http1proxy.go, upgrade.go; framing.go refuses what HTTP/1.1 could frame two ways) and the
//     passthrough splicer (passthrough.go, splicer_linux.go) carry traffic by it.
//   - NewHTTPHandler (http.go) answers http-01 on port 80 and redirects the rest to HTTPS.
//   - Server (server.go) runs the listeners, readiness, metrics (metrics.go) and graceful
//     shutdown.
//
// Nothing in this package logs key material, key authorizations or tokens.
package edge
