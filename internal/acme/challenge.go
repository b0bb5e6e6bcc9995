package acme

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
)

// The responses below are derived from the token and the account key (the key authorization of
// RFC 8555 section 8.1); none makes a request.

// KeyAuthorization returns the key authorization for token ("<token>.<account key
// thumbprint>"), which every challenge response is derived from and a self-check compares with
// what is served.
func (c *Client) KeyAuthorization(token string) (string, error) {
	if token == "" {
		return "", permanent(errors.New("key authorization: empty token"))
	}
	// The http-01 response is the key authorization itself; x/crypto exports it under that name.
	keyAuthorization, err := c.acme.HTTP01ChallengeResponse(token)
	if err != nil {
		return "", fmt.Errorf("computing key authorization: %w", err)
	}
	return keyAuthorization, nil
}

// TLSALPN01Certificate returns the self-signed certificate to present to a validator that
// connects to domain:443 with ALPN "acme-tls/1" (RFC 8737). It has a fresh P-256 key and is
// valid for 24 hours.
func (c *Client) TLSALPN01Certificate(token, domain string) (tls.Certificate, error) {
	if strings.HasPrefix(domain, "*.") {
		return tls.Certificate{}, permanent(fmt.Errorf("tls-alpn-01 cannot validate wildcard %s: use dns-01", domain))
	}
	if token == "" || domain == "" {
		return tls.Certificate{}, permanent(errors.New("tls-alpn-01 certificate: empty token or domain"))
	}
	cert, err := c.acme.TLSALPN01ChallengeCert(token, domain)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating tls-alpn-01 certificate for %s: %w", domain, err)
	}
	return cert, nil
}

// HTTP01Response returns the path the validator requests over plain HTTP on port 80
// ("/.well-known/acme-challenge/<token>") and the body to answer it with.
func (c *Client) HTTP01Response(token string) (path, body string, err error) {
	if token == "" {
		return "", "", permanent(errors.New("http-01 response: empty token"))
	}
	body, err = c.acme.HTTP01ChallengeResponse(token)
	if err != nil {
		return "", "", fmt.Errorf("creating http-01 response: %w", err)
	}
	return c.acme.HTTP01ChallengePath(token), body, nil
}

// DNS01Record returns the TXT record to publish for domain: its fully qualified name
// ("_acme-challenge.<domain>.", without the "*." of a wildcard, so a wildcard and its base
// domain share one name and need both values) and its value.
func (c *Client) DNS01Record(domain, token string) (fqdn, value string, err error) {
	if token == "" || domain == "" {
		return "", "", permanent(errors.New("dns-01 record: empty token or domain"))
	}
	value, err = c.acme.DNS01ChallengeRecord(token)
	if err != nil {
		return "", "", fmt.Errorf("creating dns-01 record for %s: %w", domain, err)
	}
	return DNS01RecordName(domain), value, nil
}

// DNS01RecordName returns the fully qualified TXT record name dns-01 checks for domain.
func DNS01RecordName(domain string) string {
	domain = strings.TrimSuffix(strings.TrimPrefix(domain, "*."), ".")
	return "_acme-challenge." + domain + "."
}
