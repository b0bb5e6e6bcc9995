package acme

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/acme"
)

// Challenge types certpilot solves.
const (
	ChallengeTLSALPN01 = "tls-alpn-01"
	ChallengeHTTP01    = "http-01"
	ChallengeDNS01     = "dns-01"
)

// Authorization is the state of one identifier's authorization (RFC 8555 section 7.1.4).
type Authorization struct {
	URL string
	// Identifier is the DNS name (without the "*." of a wildcard) or the IP address to prove
	// control of. An identifier of another type, or whose type does not match its value, is
	// "<type>:<value>", which names nothing certpilot asked for.
	Identifier string
	// Wildcard is true when the order asked for "*.<Identifier>"; only dns-01 can prove it.
	Wildcard   bool
	Status     string
	Expires    time.Time
	Challenges []Challenge
	// RetryAfter is when to poll again: the server's Retry-After, or DefaultRetryAfter.
	RetryAfter time.Duration
	// ServerRetryAfter is the server's Retry-After alone, 0 when it sent none; pass it to
	// PollInterval.
	ServerRetryAfter time.Duration
}

const (
	// maxChallenges bounds the challenges one authorization may offer (RFC 8555 defines four
	// types, drafts a few more).
	maxChallenges = 16
	// maxTokenLength bounds a challenge token (RFC 8555 asks for at least 128 bits of entropy,
	// 22 base64url characters; CAs send 43).
	maxTokenLength = 256
)

// Challenge is one way the server offers to validate an authorization.
type Challenge struct {
	Type   string
	URL    string
	Token  string
	Status string
	// Error is the server's problem (an *acme.Error) when validation failed.
	Error error
}

// Challenge returns the authorization's challenge of type challengeType, if the server offers it.
func (a *Authorization) Challenge(challengeType string) (Challenge, bool) {
	for _, challenge := range a.Challenges {
		if challenge.Type == challengeType {
			return challenge, true
		}
	}
	return Challenge{}, false
}

// GetAuthorization fetches the current state of the authorization at url.
func (c *Client) GetAuthorization(ctx context.Context, url string) (*Authorization, error) {
	authz, err := c.acme.GetAuthorization(ctx, url)
	if err != nil {
		return nil, failf(err, "fetching ACME authorization %s", shorten(url, maxURLLength))
	}
	if len(authz.Challenges) > maxChallenges {
		return nil, permanent(fmt.Errorf("fetching ACME authorization %s: it offers %d challenges (at most %d): refusing it",
			shorten(url, maxURLLength), len(authz.Challenges), maxChallenges))
	}
	result := &Authorization{
		URL:        url,
		Identifier: identifierOf(authz.Identifier),
		Wildcard:   authz.Wildcard,
		Status:     shorten(authz.Status, 32),
		Expires:    authz.Expires,
		RetryAfter: c.recorder.get(url),
	}
	result.ServerRetryAfter, _ = c.recorder.lookup(url)
	for _, challenge := range authz.Challenges {
		if err := c.origin.checkURL("a challenge URL", challenge.URI); err != nil {
			return nil, fmt.Errorf("fetching ACME authorization %s: %w", shorten(url, maxURLLength), err)
		}
		if len(challenge.Token) > maxTokenLength {
			return nil, permanent(fmt.Errorf("fetching ACME authorization %s: a challenge token of %d bytes (at most %d): refusing it",
				shorten(url, maxURLLength), len(challenge.Token), maxTokenLength))
		}
		result.Challenges = append(result.Challenges, Challenge{
			Type:   shorten(challenge.Type, 32),
			URL:    challenge.URI,
			Token:  challenge.Token,
			Status: shorten(challenge.Status, 32),
			Error:  sanitize(challenge.Error),
		})
	}
	if result.Status != StatusPending {
		c.recorder.forget(url)
	}
	return result, nil
}

// Accept tells the server that the response to the challenge at challengeURL is in place, so
// that it validates it. It returns as soon as the server acknowledged; poll the authorization
// with GetAuthorization for the outcome. Accepting a challenge that is already processing or
// valid is harmless.
func (c *Client) Accept(ctx context.Context, challengeURL string) error {
	if challengeURL == "" {
		return permanent(errors.New("accepting ACME challenge: no challenge URL"))
	}
	if _, err := c.acme.Accept(ctx, &acme.Challenge{URI: challengeURL}); err != nil {
		return failf(err, "accepting ACME challenge %s", shorten(challengeURL, maxURLLength))
	}
	return nil
}

// identifierOf is the Identifier of an authorization for id.
func identifierOf(id acme.AuthzID) string {
	value := shorten(id.Value, 253)
	if id.Type != IdentifierType(value) {
		return shorten(id.Type, 16) + ":" + value
	}
	return value
}

// Name is the name the authorization proves, as a Certificate lists it: Identifier, with "*."
// for a wildcard; an IP address as it is.
func (a *Authorization) Name() string {
	if a.Wildcard {
		return "*." + a.Identifier
	}
	return a.Identifier
}
