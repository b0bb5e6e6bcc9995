package acme

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
)

// ChallengeDNSPersist01 is the persistent DNS challenge (draft-ietf-acme-dns-persist): one TXT
// record at "_validation-persist.<name>" that names the CA and the account, set once.
const ChallengeDNSPersist01 = "dns-persist-01"

// CAAIdentities returns the directory's meta.caaIdentities (RFC 8555 section 7.1.1): the
// domain names the CA recognises as its own, which dns-persist-01 records name as their
// issuer-domain-name. Empty when the server does not publish them.
func (c *Client) CAAIdentities() []string { return slices.Clone(c.directory.CAA) }

// DNSPersistIssuerDomainNames returns the issuer-domain-names of the dns-persist-01 challenge of
// the authorization at authzURL: the issuer domain names a record may name for that CA.
// x/crypto's Challenge does not carry the field, so the authorization is fetched here
// (POST-as-GET, signed by jws.go) and read as raw JSON. It returns nil and no error when the
// authorization offers no dns-persist-01 challenge or the challenge lists no names.
func (c *Client) DNSPersistIssuerDomainNames(ctx context.Context, authzURL string) ([]string, error) {
	fail := func(err error) error {
		return failf(err, "fetching ACME authorization %s", shorten(authzURL, maxURLLength))
	}
	res, err := c.postAsGet(ctx, authzURL)
	if err != nil {
		return nil, fail(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fail(problem(res))
	}
	names, err := decodeIssuerDomainNames(res.Body)
	if err != nil {
		return nil, fail(err)
	}
	return names, nil
}

// maxIssuerDomainNames bounds the issuer domain names a dns-persist-01 challenge may list.
const maxIssuerDomainNames = 16

// decodeIssuerDomainNames reads an authorization object and returns the issuer-domain-names of
// its dns-persist-01 challenge.
func decodeIssuerDomainNames(body io.Reader) ([]string, error) {
	var wire struct {
		Challenges []struct {
			Type              string   `json:"type"`
			IssuerDomainNames []string `json:"issuer-domain-names"`
		} `json:"challenges"`
	}
	if err := json.NewDecoder(io.LimitReader(body, 1<<20)).Decode(&wire); err != nil {
		return nil, fmt.Errorf("reading authorization: %w", err)
	}
	for _, challenge := range wire.Challenges {
		if challenge.Type != ChallengeDNSPersist01 {
			continue
		}
		if len(challenge.IssuerDomainNames) > maxIssuerDomainNames {
			return nil, fmt.Errorf("reading authorization: its dns-persist-01 challenge lists %d issuer domain names (at most %d)",
				len(challenge.IssuerDomainNames), maxIssuerDomainNames)
		}
		for _, name := range challenge.IssuerDomainNames {
			if len(name) > 253 {
				return nil, fmt.Errorf("reading authorization: an issuer domain name of %d bytes (at most 253)", len(name))
			}
		}
		return challenge.IssuerDomainNames, nil
	}
	return nil, nil
}
