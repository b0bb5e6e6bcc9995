// Package acmetest is an in-process ACME CA for tests whose clock the test controls: the
// certificates it issues are valid from its Now, its renewal windows (RFC 9773) are placed by it,
// and faults (429 with Retry-After, 500, dropped connections) are injected during intervals of
// that time. It exists for the renewal simulator, which runs certpilot's reconciler through two
// simulated years in minutes; Pebble's clock cannot be moved.
//
// It implements what internal/acme (on golang.org/x/crypto/acme) uses of RFC 8555 and RFC 9773:
// directory with profiles and renewalInfo, newNonce, newAccount (also onlyReturnExisting),
// account update, newOrder (with replaces, and 409 alreadyReplaced for a certificate replaced
// already), authorizations with one dns-01 challenge each, challenge accept, finalize,
// certificate download and renewalInfo. It does not verify JWS signatures or nonces (the client
// is the code under test, not an attacker), and it validates no challenge: accepting one makes
// it valid. Its DNS server (DNSAddr) answers the TXT record of every pending dns-01 challenge, so
// a solver's self-check sees what it would see after publishing the record.
//
// It counts requests by endpoint, orders, certificates and replacements by name (Stats).
package acmetest
