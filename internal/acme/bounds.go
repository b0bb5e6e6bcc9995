package acme

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/certpilot/certpilot/internal/text"
	"golang.org/x/crypto/acme"
)

// What an ACME server can make the client read, hold or repeat is bounded here, because the
// server of a namespaced Issuer is whatever a tenant wrote into its spec:
//
//   - every response body is capped at MaxResponseBytes on the transport, so x/crypto's own
//     reads (error bodies, orders, certificates) are covered too;
//   - redirects are never followed;
//   - every request goes to the directory's scheme and host, whatever URL the directory, an
//     order or an authorization names;
//   - an order holds at most MaxOrderIdentifiers identifiers and one authorization per
//     identifier, and CheckOrderIdentifiers refuses an order for other names than were asked;
//   - an error's message (which callers copy into status conditions and Events) says at most the
//     HTTP status, the ACME problem type and its detail cut to MaxProblemDetail bytes: the body of
//     a response that is not an ACME problem never reaches it.

const (
	// MaxResponseBytes caps every response body the client reads. An ACME object, a problem
	// document or a certificate chain is a few KiB; Let's Encrypt's largest answers (orders of
	// 100 names) stay well under it.
	MaxResponseBytes = 1 << 20
	// maxResponseHeaderBytes caps a response's headers (Go's default is 1 MiB).
	maxResponseHeaderBytes = 64 << 10
	// MaxOrderIdentifiers is the most identifiers an order may hold: Let's Encrypt's limit of
	// names per certificate, and the CRD's bound on a Certificate's dnsNames.
	MaxOrderIdentifiers = 100
	// MaxProblemDetail is how much of an ACME problem's detail an error keeps, in bytes.
	MaxProblemDetail = 300
	// maxSubproblems is how many subproblems of a compound problem an error keeps.
	maxSubproblems = 5
	// maxSubproblemDetail is how much of each kept subproblem's detail an error keeps.
	maxSubproblemDetail = 120
	// maxURLLength bounds the URLs an order or an authorization may name.
	maxURLLength = 2048
	// maxErrorMessage bounds the whole message of an error the client returns.
	maxErrorMessage = 2048
)

// ErrResponseTooLarge is returned (wrapped) when a response body exceeds MaxResponseBytes.
var ErrResponseTooLarge = fmt.Errorf("the ACME server's response is larger than %d bytes", MaxResponseBytes)

// origin is the scheme and host (with its port made explicit) every request must go to.
type origin struct{ scheme, hostPort string }

func originOf(rawURL string) (origin, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return origin{}, err
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "https" && scheme != "http") || u.Hostname() == "" {
		return origin{}, fmt.Errorf("%q is not an http(s) URL with a host", shorten(rawURL, 200))
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[scheme]
	}
	return origin{scheme: scheme, hostPort: net.JoinHostPort(strings.ToLower(u.Hostname()), port)}, nil
}

func (o origin) String() string { return o.scheme + "://" + o.hostPort }

// checkURL refuses a URL off the origin, or longer than maxURLLength. what names the URL in the
// message ("the order's finalize URL").
func (o origin) checkURL(what, rawURL string) error {
	if len(rawURL) > maxURLLength {
		return permanent(fmt.Errorf("the ACME server named a %s of %d bytes (at most %d): refusing it", what, len(rawURL), maxURLLength))
	}
	got, err := originOf(rawURL)
	if err != nil {
		return permanent(fmt.Errorf("the ACME server named %s that is not usable: %v", what, err))
	}
	if got != o {
		return permanent(fmt.Errorf("the ACME server named %s on %s, but certpilot sends ACME requests only to the directory's scheme and host %s",
			what, got, o))
	}
	return nil
}

// boundedTransport refuses requests off the directory's origin before they are sent and caps
// every response body.
type boundedTransport struct {
	base   http.RoundTripper
	origin origin
}

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.origin.checkURL("the URL "+req.URL.Path, req.URL.String()); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	res, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	res.Body = &cappedBody{body: res.Body, remaining: MaxResponseBytes}
	return res, nil
}

// cappedBody fails a read past the cap instead of handing over a truncated body, so a decoder
// never mistakes a cut document for a whole one.
type cappedBody struct {
	body      io.ReadCloser
	remaining int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.remaining < 0 {
		return 0, ErrResponseTooLarge
	}
	if int64(len(p)) > b.remaining+1 {
		p = p[:b.remaining+1]
	}
	n, err := b.body.Read(p)
	b.remaining -= int64(n)
	if b.remaining < 0 {
		return n + int(b.remaining), ErrResponseTooLarge
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.body.Close() }

// refuseRedirect is the http.Client's CheckRedirect: an ACME server has no reason to redirect,
// and following one would let it point the manager at any address (https to http, too).
func refuseRedirect(req *http.Request, via []*http.Request) error {
	return permanent(fmt.Errorf("the ACME server answered %s with a redirect to %s: certpilot follows no redirects",
		via[len(via)-1].URL.Path, originString(req.URL)))
}

func originString(u *url.URL) string {
	if o, err := originOf(u.String()); err == nil {
		return o.String()
	}
	return "an unusable URL"
}

// checkOrder refuses an order larger than an order can be, or naming URLs off the origin.
func (o origin) checkOrder(order *Order) error {
	if len(order.Identifiers) > MaxOrderIdentifiers {
		return permanent(fmt.Errorf("the ACME order has %d identifiers (at most %d): refusing it", len(order.Identifiers), MaxOrderIdentifiers))
	}
	if len(order.AuthzURLs) > len(order.Identifiers) {
		return permanent(fmt.Errorf("the ACME order has %d authorizations for %d identifiers: refusing it", len(order.AuthzURLs), len(order.Identifiers)))
	}
	checks := []struct{ what, url string }{
		{"order URL", order.URL}, {"the order's finalize URL", order.FinalizeURL}, {"the order's certificate URL", order.CertURL},
	}
	for _, authz := range order.AuthzURLs {
		checks = append(checks, struct{ what, url string }{"an authorization URL", authz})
	}
	for _, check := range checks {
		if check.url == "" {
			continue
		}
		if err := o.checkURL(check.what, check.url); err != nil {
			return err
		}
	}
	return nil
}

// CheckOrderIdentifiers refuses an order whose identifiers are not exactly identifiers (DNS
// names and IP addresses, each of its own type; in any order, ignoring case): a server that
// answers a new order, or an order URL recorded earlier, with an order for other names must not
// get a CSR for them. The error is permanent.
func CheckOrderIdentifiers(order *Order, identifiers []string) error {
	if order == nil {
		return permanent(errors.New("checking ACME order: no order"))
	}
	want, got := normalizedNames(identifiers), normalizedNames(order.Identifiers)
	if slices.Equal(want, got) {
		return nil
	}
	return permanent(fmt.Errorf("the ACME order %s is for %s, not for the names asked (%s): refusing it",
		shorten(order.URL, 200), nameList(got), nameList(want)))
}

func normalizedNames(names []string) []string {
	out := make([]string, 0, len(names))
	for _, name := range names {
		out = append(out, strings.ToLower(strings.TrimSuffix(name, ".")))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// nameList prints at most five names, each cut to a DNS name's length.
func nameList(names []string) string {
	const shown = 5
	parts := make([]string, 0, shown+1)
	for i, name := range names {
		if i == shown {
			parts = append(parts, fmt.Sprintf("and %d more", len(names)-shown))
			break
		}
		parts = append(parts, shorten(name, 253))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// acmeProblemType matches the problem types of RFC 8555 section 6.7 (and the pre-RFC namespace).
var acmeProblemType = regexp.MustCompile(`^urn:(ietf:params:)?acme:error:[A-Za-z0-9]{1,64}$`)

// sanitizeProblem cuts an *acme.Error down, in place, to what may be shown: its HTTP status, an
// ACME problem type and its detail cut to MaxProblemDetail bytes (the first subproblems, cut the
// same way). A response that is not an ACME problem (a proxy's page, an internal service's
// answer) keeps only its HTTP status: x/crypto puts such a body whole into Detail.
func sanitizeProblem(problem *acme.Error) {
	problem.Instance = ""
	if !acmeProblemType.MatchString(problem.ProblemType) {
		problem.ProblemType, problem.Subproblems = "", nil
		problem.Detail = http.StatusText(problem.StatusCode)
		return
	}
	problem.Detail = shorten(problem.Detail, MaxProblemDetail)
	subproblems := make([]acme.Subproblem, 0, min(len(problem.Subproblems), maxSubproblems))
	for _, sub := range problem.Subproblems {
		if len(subproblems) == maxSubproblems {
			break
		}
		if !acmeProblemType.MatchString(sub.Type) {
			continue
		}
		sub.Detail = shorten(sub.Detail, maxSubproblemDetail)
		if sub.Identifier != nil {
			sub.Identifier = &acme.AuthzID{Type: shorten(sub.Identifier.Type, 16), Value: shorten(sub.Identifier.Value, 253)}
		}
		subproblems = append(subproblems, sub)
	}
	problem.Subproblems = subproblems
}

// sanitize bounds what err says: the ACME problem in its chain is cut down in place (see
// sanitizeProblem), and a message still longer than maxErrorMessage is cut. Classification
// (IsPermanent, RetryAfterOf, ProblemType) sees the same problem. fmt.Errorf formats its message
// at once, so sanitize an error before wrapping it (failf does).
func sanitize(err error) error {
	if err == nil {
		return nil
	}
	var problem *acme.Error
	if errors.As(err, &problem) {
		sanitizeProblem(problem)
	}
	if len(err.Error()) > maxErrorMessage {
		return &shortenedError{err: err}
	}
	return err
}

// failf wraps err in the message format makes of args ("creating ACME order for %v"), after
// cutting down the ACME problem in err, and bounds the whole message (see sanitize).
func failf(err error, format string, args ...any) error {
	return sanitize(fmt.Errorf(format+": %w", append(args, sanitize(err))...))
}

// shortenedError shows the first maxErrorMessage bytes of err and unwraps to it.
type shortenedError struct{ err error }

func (e *shortenedError) Error() string { return shorten(e.err.Error(), maxErrorMessage) }
func (e *shortenedError) Unwrap() error { return e.err }

// shorten cuts s to at most limit bytes of valid UTF-8 without control characters, marking a cut
// with "…" (text.Cut).
func shorten(s string, limit int) string {
	return text.Cut(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?")), limit)
}
