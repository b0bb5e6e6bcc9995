package acme

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
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
	// ServerRetryAfter is the server's Retry-After alone, 0 when it sent none; pass it to
	// PollInterval.
	ServerRetryAfter time.Duration
}

// OrderRequest is what a new order asks for.
type OrderRequest struct {
	// Identifiers are the names to order, at least one: DNS names (type "dns") and IP
	// addresses (type "ip", RFC 8738), told apart by IdentifierType.
	Identifiers []string
	// Profile names an issuance profile the server advertises (Let's Encrypt: classic,
	// tlsserver, shortlived); empty for none. Asking for one it does not advertise is a
	// permanent error, found before any request. Name one whenever the server offers several:
	// Pebble picks a random profile for orders that name none.
	Profile string
	// Replaces is the CertID (see CertID) of the certificate this order renews (RFC 9773
	// section 5). Such renewals are exempt from some of Let's Encrypt's rate limits. It is left
	// out when the server does not advertise ARI. A server that already has a replacement for
	// that certificate refuses the order with alreadyReplaced (IsAlreadyReplaced): create it
	// again without Replaces, once.
	Replaces string
}

// NewOrder creates an order for identifiers (DNS names and IP addresses) with an optional
// profile and no Replaces; see CreateOrder.
func (c *Client) NewOrder(ctx context.Context, identifiers []string, profile string) (*Order, error) {
	return c.CreateOrder(ctx, OrderRequest{Identifiers: identifiers, Profile: profile})
}

// ACME identifier types (RFC 8555 section 9.7.7, RFC 8738).
const (
	IdentifierDNS = "dns"
	IdentifierIP  = "ip"
)

// IdentifierType is the ACME identifier type of name: "ip" for an IP address, else "dns".
func IdentifierType(name string) string {
	if _, err := netip.ParseAddr(name); err == nil {
		return IdentifierIP
	}
	return IdentifierDNS
}

// authzIDs returns the ACME identifiers of names.
func authzIDs(names []string) []acme.AuthzID {
	ids := make([]acme.AuthzID, 0, len(names))
	for _, name := range names {
		ids = append(ids, acme.AuthzID{Type: IdentifierType(name), Value: name})
	}
	return ids
}

// CreateOrder creates an order (RFC 8555 section 7.4) and returns it, usually pending.
func (c *Client) CreateOrder(ctx context.Context, request OrderRequest) (*Order, error) {
	dnsNames, profile := request.Identifiers, request.Profile
	if len(dnsNames) == 0 {
		return nil, permanent(errors.New("creating ACME order: no identifiers"))
	}
	if profile != "" {
		// x/crypto (v0.59.0) supports profiles (WithOrderIssuanceProfile) and checks them against
		// the directory itself, but with unexported errors; checking here makes them permanent.
		if _, ok := c.directory.Profiles[acme.ProfileName(profile)]; !ok {
			return nil, permanent(fmt.Errorf("creating ACME order for %v: the server at %s offers no profile %q (it offers %v)",
				dnsNames, c.acme.DirectoryURL, profile, c.profileNames()))
		}
	}
	ctx = finishOnceSent(ctx) // an order the CA made is never left unknown (finish.go)
	if request.Replaces != "" && c.SupportsRenewalInfo() {
		return c.createReplacingOrder(ctx, request)
	}
	var opts []acme.OrderOption
	if profile != "" {
		opts = append(opts, acme.WithOrderIssuanceProfile(acme.ProfileName(profile)))
	}
	created, err := c.acme.AuthorizeOrder(ctx, authzIDs(dnsNames), opts...)
	if err != nil {
		return nil, failf(err, "creating ACME order for %v", dnsNames)
	}
	return c.newOrder(created, dnsNames)
}

// newOrder checks a new order against the names asked for.
func (c *Client) newOrder(created *acme.Order, dnsNames []string) (*Order, error) {
	order, err := c.fromOrder(created, c.directory.OrderURL)
	if err == nil {
		err = CheckOrderIdentifiers(order, dnsNames)
	}
	if err != nil {
		return nil, fmt.Errorf("creating ACME order for %v: %w", dnsNames, err)
	}
	return order, nil
}

// createReplacingOrder signs the newOrder request itself (jws.go): x/crypto's AuthorizeOrder
// cannot carry replaces.
func (c *Client) createReplacingOrder(ctx context.Context, request OrderRequest) (*Order, error) {
	type identifier struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	payload := struct {
		Identifiers []identifier `json:"identifiers"`
		Profile     string       `json:"profile,omitempty"`
		Replaces    string       `json:"replaces"`
	}{Profile: request.Profile, Replaces: request.Replaces}
	for _, id := range authzIDs(request.Identifiers) {
		payload.Identifiers = append(payload.Identifiers, identifier{Type: id.Type, Value: id.Value})
	}
	fail := func(err error) error {
		return failf(err, "creating ACME order for %v replacing %s", request.Identifiers, request.Replaces)
	}
	res, err := c.postJWS(ctx, c.directory.OrderURL, payload)
	if err != nil {
		return nil, fail(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		return nil, fail(problem(res))
	}
	order, err := decodeOrder(res.Body)
	if err != nil {
		return nil, fail(err)
	}
	// RFC 8555 section 7.4 requires the Location of the new order: without it the order could
	// not be polled or resumed.
	if order.URI = res.Header.Get("Location"); order.URI == "" {
		return nil, fail(errors.New("the server sent no Location for the new order"))
	}
	return c.newOrder(order, request.Identifiers)
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
		return nil, failf(err, "fetching ACME order %s", shorten(url, maxURLLength))
	}
	if order.URI == "" {
		order.URI = url
	}
	fetched, err := c.fromOrder(order, url)
	if err != nil {
		return nil, fmt.Errorf("fetching ACME order %s: %w", shorten(url, maxURLLength), err)
	}
	return fetched, nil
}

// fromOrder converts an order and refuses one that names URLs off the directory's origin or is
// larger than an order can be (bounds.go).
func (c *Client) fromOrder(o *acme.Order, requestURL string) (*Order, error) {
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
	order.ServerRetryAfter, _ = c.recorder.lookup(requestURL)
	for _, id := range o.Identifiers {
		// An identifier whose type does not match its value (an IP address as "dns", a name as
		// "ip", or another type) is not one certpilot asked for: keep it marked so that
		// CheckOrderIdentifiers refuses the order.
		value := id.Value
		if id.Type != IdentifierType(value) {
			value = shorten(id.Type, 16) + ":" + value
		}
		order.Identifiers = append(order.Identifiers, value)
	}
	if o.Error != nil {
		order.Error = sanitize(o.Error)
	}
	order.Status = shorten(order.Status, 32)
	order.Profile = shorten(order.Profile, 64)
	if order.Status == StatusValid || order.Status == StatusInvalid {
		c.recorder.forget(requestURL)
	}
	if err := c.origin.checkOrder(order); err != nil {
		return nil, err
	}
	return order, nil
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
	fail := func(err error) error {
		return failf(err, "finalizing ACME order %s", shorten(order.URL, maxURLLength))
	}
	res, err := c.postJWS(ctx, order.FinalizeURL, request)
	if err != nil {
		return nil, fail(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fail(problem(res))
	}
	finalized, err := decodeOrder(res.Body)
	if err != nil {
		return nil, fail(err)
	}
	if location := res.Header.Get("Location"); location != "" {
		finalized.URI = location
	} else {
		finalized.URI = order.URL
	}
	result, err := c.fromOrder(finalized, order.FinalizeURL)
	if err != nil {
		return nil, fail(err)
	}
	return result, nil
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
	if err := json.NewDecoder(io.LimitReader(body, MaxResponseBytes)).Decode(&wire); err != nil {
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
		return nil, failf(err, "fetching certificate %s", shorten(certURL, maxURLLength))
	}
	return chain, nil
}
