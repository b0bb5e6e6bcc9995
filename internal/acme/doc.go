// Package acme is certpilot's ACME (RFC 8555) client, a thin layer over golang.org/x/crypto/acme
// shaped for a reconciler that never blocks a worker: every call makes one request (plus, at
// most, a nonce fetch or an immediate replay after a badNonce) and returns the state the server
// reported, with the server's Retry-After. Waiting for an authorization or an order is the
// caller's job, done by requeueing.
//
// x/crypto's own polling helpers (WaitAuthorization, WaitOrder, CreateOrderCert,
// CreateCertFromOrder) sleep until the server is done, so this package does not use them, and it
// disables x/crypto's retry backoff for everything but badNonce. Finalize signs its request
// itself (jws.go), because the only x/crypto calls that finalize an order also wait for it; the
// requests signed here keep their own pool of nonces (nonces.go). A new order is never left
// unknown: it starts only with a whole request timeout left, and once sent it finishes
// (finish.go).
//
// ACME Renewal Information (RFC 9773), which x/crypto lacks, is here too (renewalinfo.go):
// RenewalInfo fetches a certificate's suggested window, and CreateOrder's OrderRequest.Replaces
// names the certificate a renewal replaces.
//
// Errors are classified for the caller: IsPermanent (the same request will keep failing until
// the spec or the account changes), RetryAfterOf (the CA asked to slow down, and for how long),
// IsAlreadyReplaced (retry the order without Replaces) and RetryAfter (when the server said when
// to come back).
//
// The server is not trusted (a namespaced Issuer's server is whatever a tenant wrote): every
// response body is capped, redirects are not followed, every request goes to the directory's
// scheme and host, orders are bounded and checked against the names asked (CheckOrderIdentifiers),
// and an error's message carries at most the HTTP status, the ACME problem type and a cut detail,
// never another body (bounds.go). Gate and WithReconcileDeadline (limit.go) let the caller bound
// the workers one issuer may hold.
//
// The package imports nothing from Kubernetes.
package acme
