package acme

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/certpilot/certpilot/internal/netguard"
)

// problemPrefix is the namespace of ACME problem types (RFC 8555 section 6.7).
const problemPrefix = "urn:ietf:params:acme:error:"

// permanentProblems are the problem types a retry of the same request cannot cure: the request,
// the spec behind it or the account has to change first. Validation failures (connection, dns,
// incorrectResponse, tls) are not here: they invalidate the order, but a new order may succeed
// once the responder or DNS is fixed, which exponential backoff covers. caa is the exception: the
// domain owner has forbidden this CA.
var permanentProblems = map[string]bool{
	"accountDoesNotExist":     true,
	"alreadyReplaced":         true,
	"alreadyRevoked":          true,
	"badCSR":                  true,
	"badPublicKey":            true,
	"badRevocationReason":     true,
	"badSignatureAlgorithm":   true,
	"caa":                     true, // the domain's CAA records forbid this CA
	"externalAccountRequired": true,
	"invalidContact":          true,
	"invalidProfile":          true,
	"malformed":               true,
	"rejectedIdentifier":      true,
	"unauthorized":            true,
	"unsupportedContact":      true,
	"unsupportedIdentifier":   true,
	"userActionRequired":      true, // new terms of service: a human must agree
}

// permanentError marks an error found on the client side that no retry can cure (a missing URL,
// a profile the server does not offer).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err: err} }

// IsPermanent reports whether retrying the request that returned err is pointless until the spec
// or the account changes: the caller should mark the resource Stalled and stop retrying, instead
// of backing off. A dial the netguard policy refused is permanent too (the spec or the
// administrator's grant has to change). Network errors, timeouts, 5xx, badNonce, rateLimited and anything unknown are
// transient.
func IsPermanent(err error) bool {
	if err == nil || IsAccountGone(err) {
		return false // registering the account again cures it
	}
	var client *permanentError
	if errors.As(err, &client) || netguard.IsRefused(err) {
		return true
	}
	var problem *acme.Error
	if !errors.As(err, &problem) {
		return false
	}
	return isPermanentProblem(problem)
}

func isPermanentProblem(problem *acme.Error) bool {
	// Pre-RFC servers used urn:acme:error:; problemName is lenient about the namespace.
	name := problemName(problem.ProblemType)
	if name == "compound" && len(problem.Subproblems) > 0 {
		// A compound problem is permanent only when every part is.
		for _, sub := range problem.Subproblems {
			if !isPermanentProblem(&acme.Error{ProblemType: sub.Type}) {
				return false
			}
		}
		return true
	}
	if permanentProblems[name] {
		return true
	}
	if problem.ProblemType == "" {
		// No problem document (a proxy's error page): judge by the status code alone.
		switch {
		case problem.StatusCode == http.StatusRequestTimeout, problem.StatusCode == http.StatusConflict,
			problem.StatusCode == http.StatusTooEarly, problem.StatusCode == http.StatusTooManyRequests:
			return false
		case problem.StatusCode >= 400 && problem.StatusCode < 500:
			return true
		}
	}
	return false
}

// RetryAfter returns how long the server asked the client to wait before retrying, from the
// Retry-After header of the error response (rateLimited, 503), if it sent one.
func RetryAfter(err error) (time.Duration, bool) {
	var problem *acme.Error
	if !errors.As(err, &problem) || problem.Header == nil {
		return 0, false
	}
	return headerRetryAfter(problem.Header)
}

// MaxServerRetryAfter caps the wait RetryAfterOf passes on: a day, the longest step of the
// renewal backoff. Let's Encrypt's rate limits can ask for a week, but a retry a day later costs
// the CA one refused request, and it keeps a stale limit from outliving a certificate.
const MaxServerRetryAfter = 24 * time.Hour

// RetryAfterOf reports whether err is the CA asking the client to slow down: HTTP 429 or 503,
// or a rateLimited or serverInternal problem (also inside a compound problem). wait is the
// response's Retry-After, capped at MaxServerRetryAfter, or 0 when it sent none: the caller's
// own backoff then decides alone.
//
// The controller counts such an error as a failed attempt and requeues at
// renewal.RetryTime(lastFailure, attempts, wait, notAfter), which waits at least wait.
func RetryAfterOf(err error) (wait time.Duration, slowDown bool) {
	var problem *acme.Error
	if !errors.As(err, &problem) || !asksToSlowDown(problem) {
		return 0, false
	}
	if problem.Header != nil {
		if d, ok := headerRetryAfter(problem.Header); ok {
			wait = min(d, MaxServerRetryAfter)
		}
	}
	return wait, true
}

// StatusCodeOf returns the HTTP status of the CA's error response in err, if err is one.
func StatusCodeOf(err error) (int, bool) {
	var problem *acme.Error
	if !errors.As(err, &problem) {
		return 0, false
	}
	return problem.StatusCode, true
}

func asksToSlowDown(problem *acme.Error) bool {
	switch problem.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true
	}
	switch problemName(problem.ProblemType) {
	case "rateLimited", "serverInternal":
		return true
	case "compound":
		for _, sub := range problem.Subproblems {
			if name := problemName(sub.Type); name == "rateLimited" || name == "serverInternal" {
				return true
			}
		}
	}
	return false
}

// IsRateLimited reports whether err is the CA's rate limit: HTTP 429, or a rateLimited problem
// (also inside a compound problem). Unlike RetryAfterOf it leaves out a CA that is merely
// unwell (503, serverInternal): a rate limit is the account's, and pauses all its new orders.
func IsRateLimited(err error) bool {
	var problem *acme.Error
	if !errors.As(err, &problem) {
		return false
	}
	if problem.StatusCode == http.StatusTooManyRequests || problemName(problem.ProblemType) == "rateLimited" {
		return true
	}
	if problemName(problem.ProblemType) == "compound" {
		for _, sub := range problem.Subproblems {
			if problemName(sub.Type) == "rateLimited" {
				return true
			}
		}
	}
	return false
}

// problemName strips the ACME namespace from a problem type, leniently (see isPermanentProblem).
func problemName(problemType string) string {
	if name, ok := strings.CutPrefix(problemType, problemPrefix); ok {
		return name
	}
	return problemType[strings.LastIndex(problemType, ":")+1:]
}

// IsAccountGone reports whether the CA no longer knows the account the request was signed for:
// accountDoesNotExist, or a key ID the server refuses as not one of its account URLs (a CA that
// was reset, such as a restarted Pebble, or a test environment wiped). Registering the key again
// creates a new account; the old account's orders are gone with it.
func IsAccountGone(err error) bool {
	var problem *acme.Error
	if !errors.As(err, &problem) {
		return false
	}
	switch problemName(problem.ProblemType) {
	case "accountDoesNotExist":
		return true
	case "malformed", "unauthorized":
		detail := strings.ToLower(problem.Detail)
		return strings.Contains(detail, "key id") || strings.Contains(detail, "kid") || strings.Contains(detail, "account does not exist") ||
			strings.Contains(detail, "no account")
	}
	return false
}

// IsAlreadyReplaced reports whether err is the server refusing an order whose Replaces names a
// certificate that already has a replacement (RFC 9773 section 5, problem alreadyReplaced,
// HTTP 409): for example a renewal whose first order certpilot lost track of. Create the order
// again without Replaces, once; IsPermanent is true for it too, so check this first.
func IsAlreadyReplaced(err error) bool {
	var problem *acme.Error
	return errors.As(err, &problem) && problemName(problem.ProblemType) == "alreadyReplaced"
}

// ProblemType returns the ACME problem type of err without its namespace ("rateLimited",
// "rejectedIdentifier", ...), or "" when err carries no ACME problem: a short, stable reason for
// status conditions and metrics.
func ProblemType(err error) string {
	var problem *acme.Error
	if !errors.As(err, &problem) {
		return ""
	}
	return strings.TrimPrefix(problem.ProblemType, problemPrefix)
}

// wireProblem is an RFC 7807 problem document as ACME servers send it.
type wireProblem struct {
	Type        string
	Detail      string
	Instance    string
	Status      int
	Subproblems []acme.Subproblem
}

func (p *wireProblem) toError(status int, header http.Header) *acme.Error {
	if status == 0 {
		status = p.Status
	}
	return &acme.Error{
		StatusCode:  status,
		ProblemType: p.Type,
		Detail:      p.Detail,
		Instance:    p.Instance,
		Header:      header,
		Subproblems: p.Subproblems,
	}
}

// problem turns an error response into an *acme.Error, as x/crypto does for its own requests,
// so that IsPermanent and RetryAfter treat both alike. Only an ACME problem document's type and
// detail are kept (sanitizeProblem): any other body is not.
func problem(res *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var wire wireProblem
	if err := json.Unmarshal(body, &wire); err != nil {
		wire = wireProblem{}
	}
	problem := wire.toError(res.StatusCode, res.Header)
	sanitizeProblem(problem)
	return problem
}
