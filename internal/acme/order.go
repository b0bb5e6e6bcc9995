package acme

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"golang.org/x/crypto/acme"
)

// Order is the state of an ACME order (RFC 8555 section 7.1.3) as the server last reported it.
type Order struct {
	// URL identifies the order; record it to resume the order after a restart.
	URL         string
	Status      string
	Identifiers []string
	AuthzURLs   []string
	FinalizeURL string
	// CertURL is set once the order is valid.
	CertURL string
	// Profile is the issuance profile the server applied (empty when it has none).
	Profile string
	Expires time.Time
	// Error is the server's problem (an *acme.Error) when the order became invalid.
	Error error
	// RetryAfter is when to poll again: the server's Retry-After, or DefaultRetryAfter.
	RetryAfter time.Duration
}

// NewOrder creates an order for dnsNames. A non-empty profile names an issuance profile the
// server advertises (Let's Encrypt: classic, tlsserver, shortlived); asking for one it does not
// advertise is a permanent error, found before any request.
//
// Name one whenever the server offers several: Pebble picks a random profile for orders that
// name none.
func (c *Client) NewOrder(ctx context.Context, dnsNames []string, profile string) (*Order, error) {
	if len(dnsNames) == 0 {
		return nil, permanent(errors.New("creating ACME order: no DNS names"))
	}
	var opts []acme.OrderOption
	if profile != "" {
		// x/crypto (v0.59.0) supports profiles (WithOrderIssuanceProfile) and checks them against
		// the directory itself, but with unexported errors; checking here makes them permanent.
		if _, ok := c.directory.Profiles[acme.ProfileName(profile)]; !ok {
			return nil, permanent(fmt.Errorf("creating ACME order for %v: the server at %s offers no profile %q (it offers %v)",
				dnsNames, c.acme.DirectoryURL, profile, c.profileNames()))
		}
		opts = append(opts, acme.WithOrderIssuanceProfile(acme.ProfileName(profile)))
	}
	order, err := c.acme.AuthorizeOrder(ctx, acme.DomainIDs(dnsNames...), opts...)
	if err != nil {
		return nil, fmt.Errorf("creating ACME order for %v: %w", dnsNames, err)
	}
	return c.fromOrder(order, c.directory.OrderURL), nil
}

func (c *Client) profileNames() []string {
	names := make([]string, 0, len(c.directory.Profiles))
	for name := range c.directory.Profiles {
		names = append(names, string(name))
	}
	slices.Sort(names)
	return names
}

// GetOrder fetches the current state of the order at url.
func (c *Client) GetOrder(ctx context.Context, url string) (*Order, error) {
	order, err := c.acme.GetOrder(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("fetching ACME order %s: %w", url, err)
	}
	if order.URI == "" {
		order.URI = url
	}
	return c.fromOrder(order, url), nil
}

func (c *Client) fromOrder(o *acme.Order, requestURL string) *Order {
	order := &Order{
		URL:         o.URI,
		Status:      o.Status,
		AuthzURLs:   o.AuthzURLs,
		FinalizeURL: o.FinalizeURL,
		CertURL:     o.CertURL,
		Profile:     string(o.Profile),
		Expires:     o.Expires,
		RetryAfter:  c.recorder.get(requestURL),
	}
	for _, id := range o.Identifiers {
		order.Identifiers = append(order.Identifiers, id.Value)
	}
	if o.Error != nil {
		order.Error = o.Error
	}
	if order.Status == StatusValid || order.Status == StatusInvalid {
		c.recorder.forget(requestURL)
	}
	return order
}

// Finalize submits the CSR (DER) of a ready order and returns the order's new state: usually
// processing (poll it with GetOrder after RetryAfter), sometimes already valid. It does not wait.
//
// It is idempotent for a caller that lost track: an order already processing or valid is only
// fetched, not finalized again.
//
// x/crypto's CreateOrderCert and CreateCertFromOrder cannot be used here: both wait until the
// order is valid, and CreateOrderCert also needs a Location header on the finalize response that
// RFC 8555 does not require and Pebble 2.9+ does not send ("Post \"\": unsupported protocol
// scheme"). So the request is signed here (jws.go), and the order URL comes from the caller.
func (c *Client) Finalize(ctx context.Context, order *Order, csrDER []byte) (*Order, error) {
	if order == nil || order.URL == "" || order.FinalizeURL == "" {
		return nil, permanent(errors.New("finalizing ACME order: the order has no URL or finalize URL"))
	}
	switch order.Status {
	case StatusReady:
	case StatusProcessing, StatusValid:
		return c.GetOrder(ctx, order.URL)
	default:
		return nil, fmt.Errorf("finalizing ACME order %s: it is %s, not ready", order.URL, order.Status)
	}
	request := struct {
		CSR string `json:"csr"`
	}{CSR: base64.RawURLEncoding.EncodeToString(csrDER)}
	res, err := c.postJWS(ctx, order.FinalizeURL, request)
	if err != nil {
		return nil, fmt.Errorf("finalizing ACME order %s: %w", order.URL, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("finalizing ACME order %s: %w", order.URL, problem(res))
	}
	finalized, err := decodeOrder(res.Body)
	if err != nil {
		return nil, fmt.Errorf("finalizing ACME order %s: %w", order.URL, err)
	}
	if location := res.Header.Get("Location"); location != "" {
		finalized.URI = location
	} else {
		finalized.URI = order.URL
	}
	return c.fromOrder(finalized, order.FinalizeURL), nil
}

// decodeOrder reads an order object; x/crypto's equivalent is unexported.
func decodeOrder(body io.Reader) (*acme.Order, error) {
	var wire struct {
		Status      string
		Expires     time.Time
		Identifiers []struct {
			Type  string
			Value string
		}
		Error          *wireProblem
		Authorizations []string
		Finalize       string
		Certificate    string
		Profile        string
	}
	if err := json.NewDecoder(io.LimitReader(body, 1<<20)).Decode(&wire); err != nil {
		return nil, fmt.Errorf("reading order: %w", err)
	}
	order := &acme.Order{
		Status:      wire.Status,
		Expires:     wire.Expires,
		AuthzURLs:   wire.Authorizations,
		FinalizeURL: wire.Finalize,
		CertURL:     wire.Certificate,
		Profile:     acme.ProfileName(wire.Profile),
	}
	for _, id := range wire.Identifiers {
		order.Identifiers = append(order.Identifiers, acme.AuthzID{Type: id.Type, Value: id.Value})
	}
	if wire.Error != nil {
		order.Error = wire.Error.toError(0, nil)
	}
	return order, nil
}

// FetchCertificate downloads the certificate chain of a valid order (Order.CertURL): DER
// certificates, leaf first.
func (c *Client) FetchCertificate(ctx context.Context, certURL string) ([][]byte, error) {
	if certURL == "" {
		return nil, permanent(errors.New("fetching certificate: the order has no certificate URL"))
	}
	chain, err := c.acme.FetchCert(ctx, certURL, true)
	if err != nil {
		return nil, fmt.Errorf("fetching certificate %s: %w", certURL, err)
	}
	return chain, nil
}
