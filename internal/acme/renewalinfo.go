package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ACME Renewal Information (ARI, RFC 9773). golang.org/x/crypto/acme v0.59.0 knows neither the
// directory's renewalInfo URL nor the renewalInfo resource, so both are handled here: the
// directory x/crypto fetches is read a second time on its way through the transport (no extra
// request), and the renewalInfo resource is a plain, unauthenticated GET.

// ErrMalformedRenewalInfo is returned (wrapped) by RenewalInfo when the server's answer cannot be
// used: not JSON, a window without start or end, or one whose end is not after its start. RFC
// 9773 section 4.2 asks clients to treat it as no answer at all: renew on the fallback schedule
// and fetch again later.
var ErrMalformedRenewalInfo = errors.New("malformed ACME renewal information")

// RenewalInfo is a CA's renewal suggestion for one certificate (RFC 9773 section 4.2).
type RenewalInfo struct {
	// CertID identifies the certificate (see CertID); it is what a renewal order's Replaces
	// names.
	CertID string
	// WindowStart and WindowEnd bound the suggested window [start, end): renew at a uniformly
	// random moment inside it (renewal.ChooseARIRenewalTime). A window in the past means renew
	// now.
	WindowStart, WindowEnd time.Time
	// ExplanationURL, when the CA sent one, explains why the window is what it is (for example
	// a mass revocation); worth showing to a human.
	ExplanationURL string
	// RetryAfter is the server's Retry-After: when to fetch the renewal information again. Zero
	// when it sent none; renewal.NextRenewalInfoFetch bounds and defaults it.
	RetryAfter time.Duration
}

// SupportsRenewalInfo reports whether the server advertises ARI (a renewalInfo URL in its
// directory). Without it, RenewalInfo fails and CreateOrder sends no replaces.
func (c *Client) SupportsRenewalInfo() bool { return c.renewalInfoURL != "" }

// CertID returns the ARI certificate identifier of cert (RFC 9773 section 4.1): the base64url
// (unpadded) keyIdentifier of its Authority Key Identifier extension, a ".", and the base64url
// of the DER content octets of its serial number (with the leading zero byte DER needs for a
// serial whose high bit is set). A certificate without an Authority Key Identifier has no
// CertID: no ACME CA issues such a certificate, so the error is permanent.
func CertID(cert *x509.Certificate) (string, error) {
	if cert == nil || cert.SerialNumber == nil {
		return "", permanent(errors.New("ARI certificate ID: no certificate"))
	}
	if len(cert.AuthorityKeyId) == 0 {
		return "", permanent(fmt.Errorf("ARI certificate ID of serial %x: the certificate has no authority key identifier", cert.SerialNumber))
	}
	der, err := asn1.Marshal(cert.SerialNumber)
	if err != nil {
		return "", permanent(fmt.Errorf("ARI certificate ID: encoding serial %x: %w", cert.SerialNumber, err))
	}
	var serial asn1.RawValue
	if _, err := asn1.Unmarshal(der, &serial); err != nil {
		return "", permanent(fmt.Errorf("ARI certificate ID: decoding serial %x: %w", cert.SerialNumber, err))
	}
	encode := base64.RawURLEncoding.EncodeToString
	return encode(cert.AuthorityKeyId) + "." + encode(serial.Bytes), nil
}

// RenewalInfo fetches the CA's renewal suggestion for cert (the leaf; its issuer's key
// identifier and its serial name it). It is one unauthenticated GET of
// <renewalInfo>/<CertID>.
//
// Errors: a server without ARI or a certificate without CertID is permanent (do not ask again
// for this certificate and server); an error response is an *acme.Error, so IsPermanent and
// RetryAfterOf classify it; an unusable answer wraps ErrMalformedRenewalInfo. In every error
// case the caller renews on the fallback schedule (renewal.FallbackRenewalTime).
func (c *Client) RenewalInfo(ctx context.Context, cert *x509.Certificate) (*RenewalInfo, error) {
	if !c.SupportsRenewalInfo() {
		return nil, permanent(fmt.Errorf("fetching ACME renewal information: the server at %s does not offer it (no renewalInfo in its directory)",
			c.acme.DirectoryURL))
	}
	certID, err := CertID(cert)
	if err != nil {
		return nil, fmt.Errorf("fetching ACME renewal information: %w", err)
	}
	url := strings.TrimSuffix(c.renewalInfoURL, "/") + "/" + certID
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", c.userAgentHeader())
	res, err := c.httpClient.Do(req)
	// Each certificate has its own URL: do not let the Retry-After recorder keep one per
	// certificate forever. The header is read below, from the response itself.
	c.recorder.forget(url)
	if err != nil {
		return nil, failf(err, "fetching ACME renewal information %s", url)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, failf(problem(res), "fetching ACME renewal information %s", url)
	}
	info, err := decodeRenewalInfo(res.Body)
	if err != nil {
		return nil, failf(err, "fetching ACME renewal information %s", url)
	}
	info.CertID = certID
	if retryAfter, ok := headerRetryAfter(res.Header); ok {
		info.RetryAfter = retryAfter
	}
	return info, nil
}

// decodeRenewalInfo reads a RenewalInfo object and refuses windows RFC 9773 calls invalid.
func decodeRenewalInfo(body io.Reader) (*RenewalInfo, error) {
	data, err := io.ReadAll(io.LimitReader(body, 64<<10))
	if err != nil {
		return nil, err
	}
	var wire struct {
		SuggestedWindow *struct {
			Start, End string
		} `json:"suggestedWindow"`
		ExplanationURL string `json:"explanationURL"`
	}
	if err := json.Unmarshal(data, &wire); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", ErrMalformedRenewalInfo, err)
	}
	if wire.SuggestedWindow == nil {
		return nil, fmt.Errorf("%w: no suggestedWindow", ErrMalformedRenewalInfo)
	}
	start, err := parseWindowTime("start", wire.SuggestedWindow.Start)
	if err != nil {
		return nil, err
	}
	end, err := parseWindowTime("end", wire.SuggestedWindow.End)
	if err != nil {
		return nil, err
	}
	if !end.After(start) {
		return nil, fmt.Errorf("%w: the window ends (%s) at or before it starts (%s)",
			ErrMalformedRenewalInfo, end.Format(time.RFC3339), start.Format(time.RFC3339))
	}
	return &RenewalInfo{WindowStart: start, WindowEnd: end, ExplanationURL: shorten(wire.ExplanationURL, maxURLLength)}, nil
}

func parseWindowTime(field, value string) (time.Time, error) {
	if value == "" {
		return time.Time{}, fmt.Errorf("%w: the window has no %s", ErrMalformedRenewalInfo, field)
	}
	t, err := time.Parse(time.RFC3339, value)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: the window's %s %q is not an RFC 3339 time", ErrMalformedRenewalInfo, field, shorten(value, 64))
	}
	return t, nil
}

// directoryReader is an http.RoundTripper that keeps a copy of the ACME directory as it passes
// through, so that the fields x/crypto does not parse (renewalInfo) cost no second request.
type directoryReader struct {
	base http.RoundTripper
	url  string

	mu   sync.Mutex
	body []byte
}

func (d *directoryReader) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := d.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || req.URL.String() != d.url || res.StatusCode != http.StatusOK {
		return res, err
	}
	// One byte past the cap, so that the transport's cap (bounds.go) reports an oversized body.
	body, err := io.ReadAll(io.LimitReader(res.Body, MaxResponseBytes+1))
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	d.mu.Lock()
	defer d.mu.Unlock()
	d.body = body
	return res, nil
}

// renewalInfoURL returns the directory's renewalInfo URL, empty when it has none or was not read.
func (d *directoryReader) renewalInfoURL() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var directory struct {
		RenewalInfo string `json:"renewalInfo"`
	}
	if json.Unmarshal(d.body, &directory) != nil {
		return ""
	}
	return directory.RenewalInfo
}
