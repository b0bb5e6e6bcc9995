package acme

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/certpilot/certpilot/internal/netguard"
)

// Status values of orders, authorizations and challenges (RFC 8555 section 7.1.6).
const (
	StatusPending     = acme.StatusPending
	StatusReady       = acme.StatusReady
	StatusProcessing  = acme.StatusProcessing
	StatusValid       = acme.StatusValid
	StatusInvalid     = acme.StatusInvalid
	StatusDeactivated = acme.StatusDeactivated
	StatusExpired     = acme.StatusExpired
	StatusRevoked     = acme.StatusRevoked
)

// Options configure a Client.
type Options struct {
	// DirectoryURL is the ACME server's directory, for example Let's Encrypt staging's
	// https://acme-staging-v02.api.letsencrypt.org/directory.
	DirectoryURL string
	// AccountKey identifies the ACME account: RSA or ECDSA P-256, P-384 or P-521 (see
	// CheckAccountKey).
	AccountKey crypto.Signer
	// AccountURI is the account's URL when already known (recorded in an Issuer's status). It
	// saves the lookup that signed requests otherwise need once per Client.
	AccountURI string
	// CABundle is PEM certificates trusted, besides the system roots, for the server's HTTPS: a
	// private CA such as Pebble. It cannot be combined with HTTPClient.
	CABundle []byte
	// UserAgent is prepended to the User-Agent header, so the CA can tell who calls it.
	UserAgent string
	// HTTPClient sends the requests. Nil means a client with a 30 s timeout per request.
	HTTPClient *http.Client
	// DialPolicy, when set, decides which addresses the client may connect to (after name
	// resolution): set it for a namespaced Issuer, whose server a tenant chose. A refused dial is
	// a permanent error. It cannot be combined with HTTPClient.
	DialPolicy *netguard.Policy
	// ObserveRequest, when set, is told about every request: the endpoint (see Endpoint), the
	// HTTP status (0 when no response came) and how long it took. The controller feeds its
	// metrics with it.
	ObserveRequest func(endpoint string, status int, duration time.Duration)
}

// ExternalAccountBinding ties a new account to an account at the CA (RFC 8555 section 7.3.4),
// as ZeroSSL, Google Trust Services and most commercial ACME CAs require.
type ExternalAccountBinding struct {
	KeyID string
	// HMACKey is the decoded MAC key (CAs hand it out base64url-encoded).
	HMACKey []byte
}

// Client talks to one ACME server with one account key. It is safe for concurrent use.
type Client struct {
	acme       *acme.Client
	directory  acme.Directory
	httpClient *http.Client
	// origin is the directory's scheme and host, the only one requests go to (bounds.go).
	origin    origin
	userAgent string
	recorder  *retryAfterRecorder
	// renewalInfoURL is the directory's renewalInfo (RFC 9773), empty when the server has no ARI.
	renewalInfoURL string
	// nonces serves the requests this package signs itself (jws.go).
	nonces noncePool

	mu         sync.Mutex
	accountURI string
}

// New returns a Client for the server at opts.DirectoryURL, after fetching its directory (one
// request). An account key CheckAccountKey refuses is a permanent error, found before any
// request.
func New(ctx context.Context, opts Options) (*Client, error) {
	if opts.DirectoryURL == "" {
		return nil, permanent(errors.New("ACME directory URL is empty"))
	}
	if err := CheckAccountKey(opts.AccountKey); err != nil {
		return nil, err
	}
	directoryOrigin, err := originOf(opts.DirectoryURL)
	if err != nil {
		return nil, permanent(fmt.Errorf("ACME directory URL: %w", err))
	}
	httpClient, err := newHTTPClient(opts)
	if err != nil {
		return nil, err
	}
	base := httpClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	base = &boundedTransport{base: finishingTransport{base: base}, origin: directoryOrigin}
	if opts.ObserveRequest != nil {
		base = &observingTransport{base: base, observe: opts.ObserveRequest}
	}
	directory := &directoryReader{base: base, url: opts.DirectoryURL}
	recorder := &retryAfterRecorder{base: directory, values: map[string]time.Duration{}}
	recording := *httpClient
	recording.Transport = recorder
	recording.CheckRedirect = refuseRedirect

	c := &Client{
		acme: &acme.Client{
			Key:          opts.AccountKey,
			DirectoryURL: opts.DirectoryURL,
			HTTPClient:   &recording,
			UserAgent:    opts.UserAgent,
			RetryBackoff: replayBadNonceOnly,
			KID:          acme.KeyID(opts.AccountURI),
		},
		httpClient: &recording,
		origin:     directoryOrigin,
		userAgent:  opts.UserAgent,
		recorder:   recorder,
		accountURI: opts.AccountURI,
	}
	c.directory, err = c.acme.Discover(ctx)
	if err != nil {
		return nil, failf(err, "fetching ACME directory %s", opts.DirectoryURL)
	}
	c.renewalInfoURL = directory.renewalInfoURL()
	if err := c.checkDirectory(); err != nil {
		return nil, err
	}
	return c, nil
}

func newHTTPClient(opts Options) (*http.Client, error) {
	if opts.HTTPClient != nil {
		if len(opts.CABundle) > 0 || opts.DialPolicy != nil {
			return nil, permanent(errors.New("ACME client options: set CABundle and DialPolicy, or HTTPClient, not both"))
		}
		return opts.HTTPClient, nil
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if opts.DialPolicy != nil {
		// The same dialer settings as Go's default transport, with the policy's check on every
		// connection. A proxy from the environment is dialled instead of the server: grant it.
		transport.DialContext = opts.DialPolicy.Dialer(net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	// Many reconcile workers talk to one CA at once: keep their connections (Go's default keeps
	// two idle per host, so the others would pay a TLS handshake per request).
	transport.MaxIdleConns, transport.MaxIdleConnsPerHost = 256, 128
	transport.MaxResponseHeaderBytes = maxResponseHeaderBytes
	if len(opts.CABundle) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(opts.CABundle) {
			return nil, permanent(errors.New("ACME CA bundle holds no PEM certificate"))
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: transport, Timeout: RequestTimeout}, nil
}

// replayBadNonceOnly replaces x/crypto's retry backoff, which sleeps up to 10 s between retries
// of 5xx and 429 answers: a reconciler must return those to be requeued instead. The one retry
// kept is the immediate replay after a badNonce (the only 400 that reaches RetryBackoff): RFC
// 8555 section 6.5 expects clients to retry with the fresh nonce, and servers reject nonces now
// and then (Pebble 5 % by default).
func replayBadNonceOnly(n int, _ *http.Request, res *http.Response) time.Duration {
	if res != nil && res.StatusCode == http.StatusBadRequest && n <= maxBadNonceReplays {
		return time.Millisecond
	}
	return 0
}

// maxProfiles bounds the issuance profiles a directory may advertise; Let's Encrypt has three.
const maxProfiles = 32

// checkDirectory refuses a directory that names a URL off its own scheme and host, or more
// profiles than a CA has.
func (c *Client) checkDirectory() error {
	urls := []struct{ what, url string }{
		{"newNonce", c.directory.NonceURL}, {"newAccount", c.directory.RegURL}, {"newOrder", c.directory.OrderURL},
		{"newAuthz", c.directory.AuthzURL}, {"revokeCert", c.directory.RevokeURL}, {"keyChange", c.directory.KeyChangeURL},
		{"renewalInfo", c.renewalInfoURL},
	}
	for _, u := range urls {
		if u.url == "" {
			continue
		}
		if err := c.origin.checkURL("its "+u.what+" URL", u.url); err != nil {
			return fmt.Errorf("ACME directory %s: %w", c.acme.DirectoryURL, err)
		}
	}
	if len(c.directory.Profiles) > maxProfiles {
		return permanent(fmt.Errorf("ACME directory %s advertises %d profiles (at most %d): refusing it", c.acme.DirectoryURL, len(c.directory.Profiles), maxProfiles))
	}
	for name := range c.directory.Profiles {
		if len(name) > 64 {
			return permanent(fmt.Errorf("ACME directory %s advertises a profile name of %d bytes (at most 64): refusing it", c.acme.DirectoryURL, len(name)))
		}
	}
	return nil
}

// Profiles returns the names of the issuance profiles the server advertises, sorted; none when
// it predates profiles.
func (c *Client) Profiles() []string { return c.profileNames() }

// AccountURI returns the account URL once known: from Options, Register, or the lookup a signed
// request made.
func (c *Client) AccountURI() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accountURI
}

func (c *Client) setAccountURI(uri string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.accountURI = uri
}

// Register creates the account for the client's key, agreeing to the CA's terms of service, and
// returns its URL. It is idempotent: when the key already has an account, it returns that
// account's URL. email may be empty; eab is needed by CAs that require external account binding.
func (c *Client) Register(ctx context.Context, email string, eab *ExternalAccountBinding) (string, error) {
	account := &acme.Account{}
	if email != "" {
		account.Contact = []string{"mailto:" + email}
	}
	if eab != nil {
		account.ExternalAccountBinding = &acme.ExternalAccountBinding{KID: eab.KeyID, Key: eab.HMACKey}
	}
	registered, err := c.acme.Register(ctx, account, acme.AcceptTOS)
	if errors.Is(err, acme.ErrAccountAlreadyExists) {
		// The server answered with the existing account's URL; x/crypto recorded it as KID but
		// does not return it, so ask once (onlyReturnExisting).
		existing, err := c.acme.GetReg(ctx, "")
		if err != nil {
			return "", failf(err, "looking up the existing ACME account at %s", c.acme.DirectoryURL)
		}
		if err := c.origin.checkURL("an account URL", existing.URI); err != nil {
			return "", err
		}
		c.setAccountURI(existing.URI)
		// The account's contact follows the spec: a changed email reaches the CA.
		// (An empty email leaves the contact as it is: ACME servers refuse an empty update.)
		if len(account.Contact) > 0 && !slices.Equal(existing.Contact, account.Contact) {
			existing.Contact = account.Contact
			if _, err := c.acme.UpdateReg(ctx, existing); err != nil {
				return "", failf(err, "updating the contact of ACME account %s", existing.URI)
			}
		}
		return existing.URI, nil
	}
	if err != nil {
		return "", failf(err, "registering ACME account at %s", c.acme.DirectoryURL)
	}
	if err := c.origin.checkURL("an account URL", registered.URI); err != nil {
		return "", err
	}
	c.setAccountURI(registered.URI)
	return registered.URI, nil
}
