package acme

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
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
	userAgent  string
	recorder   *retryAfterRecorder
	// renewalInfoURL is the directory's renewalInfo (RFC 9773), empty when the server has no ARI.
	renewalInfoURL string

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
	httpClient, err := newHTTPClient(opts)
	if err != nil {
		return nil, err
	}
	base := httpClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	if opts.ObserveRequest != nil {
		base = &observingTransport{base: base, observe: opts.ObserveRequest}
	}
	directory := &directoryReader{base: base, url: opts.DirectoryURL}
	recorder := &retryAfterRecorder{base: directory, values: map[string]time.Duration{}}
	recording := *httpClient
	recording.Transport = recorder

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
		userAgent:  opts.UserAgent,
		recorder:   recorder,
		accountURI: opts.AccountURI,
	}
	c.directory, err = c.acme.Discover(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetching ACME directory %s: %w", opts.DirectoryURL, err)
	}
	c.renewalInfoURL = directory.renewalInfoURL()
	return c, nil
}

func newHTTPClient(opts Options) (*http.Client, error) {
	if opts.HTTPClient != nil {
		if len(opts.CABundle) > 0 {
			return nil, permanent(errors.New("ACME client options: set CABundle or HTTPClient, not both"))
		}
		return opts.HTTPClient, nil
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Many reconcile workers talk to one CA at once: keep their connections (Go's default keeps
	// two idle per host, so the others would pay a TLS handshake per request).
	transport.MaxIdleConns, transport.MaxIdleConnsPerHost = 256, 128
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
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}, nil
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
			return "", fmt.Errorf("looking up the existing ACME account at %s: %w", c.acme.DirectoryURL, err)
		}
		c.setAccountURI(existing.URI)
		// The account's contact follows the spec: a changed email reaches the CA.
		// (An empty email leaves the contact as it is: ACME servers refuse an empty update.)
		if len(account.Contact) > 0 && !slices.Equal(existing.Contact, account.Contact) {
			existing.Contact = account.Contact
			if _, err := c.acme.UpdateReg(ctx, existing); err != nil {
				return "", fmt.Errorf("updating the contact of ACME account %s: %w", existing.URI, err)
			}
		}
		return existing.URI, nil
	}
	if err != nil {
		return "", fmt.Errorf("registering ACME account at %s: %w", c.acme.DirectoryURL, err)
	}
	c.setAccountURI(registered.URI)
	return registered.URI, nil
}
