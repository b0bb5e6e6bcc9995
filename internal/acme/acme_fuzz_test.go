package acme

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

// endless is a body that never ends: what a parser reads of it shows whether it bounds its reads.
type endless struct{ read int64 }

func (e *endless) Read(p []byte) (int, error) {
	clear(p)
	e.read += int64(len(p))
	return len(p), nil
}

// bodyAfter returns a reader of data followed by an endless run of zeros, and a function that
// reports how many bytes were read in all.
func bodyAfter(data []byte) (io.Reader, func() int64) {
	data = bytes.Clone(data)
	tail := &endless{}
	reader := bytes.NewReader(data)
	return io.MultiReader(reader, tail), func() int64 { return int64(len(data)-reader.Len()) + tail.read }
}

// FuzzProblem checks problem, which turns any error response (a CA's problem document, a proxy's
// HTML page) into an *acme.Error: it keeps the status code, reads at most 64 KiB of an endless
// body, and the classifiers built on it agree with each other (alreadyReplaced is permanent;
// RetryAfterOf waits between 0 and MaxServerRetryAfter, RetryAfter at least MinRetryAfter).
func FuzzProblem(f *testing.F) {
	f.Add(429, "3600", []byte(`{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s","status":429}`))
	f.Add(400, "", []byte(`{"type":"urn:ietf:params:acme:error:badNonce","detail":"JWS has an invalid anti-replay nonce: \"zXB8\"","status":400}`))
	f.Add(409, "", []byte(`{"type":"urn:ietf:params:acme:error:alreadyReplaced","detail":"certificate already has a replacement","status":409}`))
	f.Add(403, "", []byte(`{"type":"urn:ietf:params:acme:error:compound","detail":"Error creating new order","subproblems":[{"type":"urn:ietf:params:acme:error:caa","detail":"CAA forbids","identifier":{"type":"dns","value":"example.com"}},{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"x"}]}`))
	f.Add(503, "Wed, 21 Oct 2026 07:28:00 GMT", []byte("<html><body><h1>503 Service Unavailable</h1></body></html>"))
	f.Add(500, "-1", []byte(`{"type":"urn:acme:error:serverInternal"}`))
	f.Add(404, "", []byte(nil))
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		status = 400 + (status%200+200)%200
		reader, read := bodyAfter(body)
		res := &http.Response{
			StatusCode: status,
			Status:     strconv.Itoa(status) + " " + http.StatusText(status),
			Header:     http.Header{"Retry-After": {retryAfter}},
			Body:       io.NopCloser(reader),
		}
		err := problem(res)
		if n := read(); n > 64<<10 {
			t.Fatalf("problem read %d bytes of the body, want at most 64 KiB", n)
		}
		var acmeErr *acme.Error
		if !errors.As(err, &acmeErr) {
			t.Fatalf("problem returned %T, want *acme.Error", err)
		}
		if acmeErr.StatusCode != status {
			t.Fatalf("problem's StatusCode = %d, want the response's %d", acmeErr.StatusCode, status)
		}
		if IsAlreadyReplaced(err) && !IsPermanent(err) {
			t.Fatalf("%v: IsAlreadyReplaced but not IsPermanent", err)
		}
		if wait, slowDown := RetryAfterOf(err); wait < 0 || wait > MaxServerRetryAfter || !slowDown && wait != 0 {
			t.Fatalf("RetryAfterOf = %v, %v", wait, slowDown)
		}
		if wait, ok := RetryAfter(err); ok && wait < MinRetryAfter {
			t.Fatalf("RetryAfter = %v, below MinRetryAfter", wait)
		}
		_ = ProblemType(err)
		// What a status condition may repeat: an ACME type and a cut detail, or the status only.
		if len(err.Error()) > maxErrorMessage {
			t.Fatalf("the problem's message has %d bytes, more than %d", len(err.Error()), maxErrorMessage)
		}
		if acmeErr.ProblemType == "" && acmeErr.Detail != http.StatusText(status) {
			t.Fatalf("a response without an ACME problem type kept the detail %q", acmeErr.Detail)
		}
	})
}

// FuzzParseRetryAfter checks parseRetryAfter on any header value: an accepted wait is whole
// seconds within [MinRetryAfter, 30 days], and re-encoding it as delay-seconds gives it back;
// PollInterval stays within [FirstPollInterval, the server's value or a minute] for any input.
func FuzzParseRetryAfter(f *testing.F) {
	for _, value := range []string{"120", "0", "-5", " 7 ", "Wed, 21 Oct 2026 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
		"Sun Nov  6 08:49:37 1994", "99999999999999999999", "1.5", ""} {
		f.Add(value, int64(15*time.Second))
	}
	now := time.Date(2026, time.October, 21, 7, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, value string, pending int64) {
		wait, ok := parseRetryAfter(value, now)
		if !ok {
			if wait != 0 {
				t.Fatalf("parseRetryAfter(%q) = %v, false", value, wait)
			}
		} else {
			if wait < MinRetryAfter || wait > maxRetryAfter || wait%time.Second != 0 {
				t.Fatalf("parseRetryAfter(%q) = %v, want whole seconds in [%v, %v]", value, wait, MinRetryAfter, maxRetryAfter)
			}
			again, ok := parseRetryAfter(strconv.FormatInt(int64(wait/time.Second), 10), now)
			if !ok || again != wait {
				t.Fatalf("parseRetryAfter(%q) = %v, but its delay-seconds give %v, %v", value, wait, again, ok)
			}
		}
		interval := PollInterval(wait, time.Duration(pending))
		if upper := max(wait, MaxPollInterval); interval < FirstPollInterval || interval > upper {
			t.Fatalf("PollInterval(%v, %v) = %v, want within [%v, %v]", wait, time.Duration(pending), interval, FirstPollInterval, upper)
		}
	})
}

// FuzzDecodeRenewalInfo checks the renewalInfo decoder on any body: it reads at most 64 KiB of
// an endless one, every refusal wraps ErrMalformedRenewalInfo (the caller's cue to fall back),
// an accepted window ends after it starts, and it survives re-encoding.
func FuzzDecodeRenewalInfo(f *testing.F) {
	f.Add([]byte(`{"suggestedWindow":{"start":"2026-01-02T04:00:00Z","end":"2026-01-03T04:00:00Z"},"explanationURL":"https://acme.example.com/docs/ari"}`))
	f.Add([]byte(`{"suggestedWindow":{"start":"2026-01-02T04:00:00.123456789+02:00","end":"2026-01-02T04:00:01+02:00"}}`))
	f.Add([]byte(`{"suggestedWindow":{"start":"2026-01-03T04:00:00Z","end":"2026-01-02T04:00:00Z"}}`))
	f.Add([]byte(`{"suggestedWindow":{"start":"tomorrow"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		info, err := decodeRenewalInfo(bytes.NewReader(body))
		reader, read := bodyAfter(body)
		if _, endlessErr := decodeRenewalInfo(reader); endlessErr == nil && err != nil {
			t.Fatalf("the body followed by zeros decoded, alone it did not: %v", err)
		}
		if n := read(); n > 64<<10 {
			t.Fatalf("decodeRenewalInfo read %d bytes, want at most 64 KiB", n)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformedRenewalInfo) {
				t.Fatalf("decodeRenewalInfo error %v does not wrap ErrMalformedRenewalInfo", err)
			}
			return
		}
		if !info.WindowEnd.After(info.WindowStart) {
			t.Fatalf("accepted a window from %v to %v", info.WindowStart, info.WindowEnd)
		}
		encoded, err := json.Marshal(map[string]any{
			"suggestedWindow": map[string]string{
				"start": info.WindowStart.Format(time.RFC3339Nano),
				"end":   info.WindowEnd.Format(time.RFC3339Nano),
			},
			"explanationURL": info.ExplanationURL,
		})
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeRenewalInfo(bytes.NewReader(encoded))
		if err != nil {
			t.Fatalf("decoding the re-encoded %s: %v", encoded, err)
		}
		if !again.WindowStart.Equal(info.WindowStart) || !again.WindowEnd.Equal(info.WindowEnd) || again.ExplanationURL != info.ExplanationURL {
			t.Fatalf("renewal info changed in the round trip: %+v, then %+v", info, again)
		}
	})
}

// FuzzDecodeOrder checks the order decoder (replacing orders and finalize responses) on any
// body: it reads at most 1 MiB of an endless one, and an order it accepts decodes the same
// after re-encoding.
func FuzzDecodeOrder(f *testing.F) {
	f.Add([]byte(`{"status":"pending","expires":"2026-01-09T08:26:43Z","identifiers":[{"type":"dns","value":"www.example.com"}],"authorizations":["https://acme.example.com/authz/1"],"finalize":"https://acme.example.com/finalize/1","profile":"shortlived"}`))
	f.Add([]byte(`{"status":"valid","expires":"2026-01-09T08:26:43.5+01:00","identifiers":[{"type":"dns","value":"a.example"},{"type":"dns","value":"*.a.example"}],"authorizations":[],"finalize":"https://x/f","certificate":"https://x/cert/1"}`))
	f.Add([]byte(`{"status":"invalid","error":{"type":"urn:ietf:params:acme:error:compound","detail":"x","status":403,"subproblems":[{"type":"urn:ietf:params:acme:error:caa","identifier":{"type":"dns","value":"a.example"}}]}}`))
	f.Add([]byte(`{"status":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		reader, read := bodyAfter(body)
		_, _ = decodeOrder(reader)
		if n := read(); n > 1<<20 {
			t.Fatalf("decodeOrder read %d bytes, want at most 1 MiB", n)
		}
		order, err := decodeOrder(bytes.NewReader(body))
		if err != nil {
			return
		}
		type wireIdentifier struct{ Type, Value string }
		wire := struct {
			Status         string
			Expires        time.Time
			Identifiers    []wireIdentifier
			Error          *wireProblem
			Authorizations []string
			Finalize       string
			Certificate    string
			Profile        string
		}{
			Status: order.Status, Expires: order.Expires, Authorizations: order.AuthzURLs,
			Finalize: order.FinalizeURL, Certificate: order.CertURL, Profile: string(order.Profile),
		}
		for _, id := range order.Identifiers {
			wire.Identifiers = append(wire.Identifiers, wireIdentifier{id.Type, id.Value})
		}
		if order.Error != nil {
			var problem *acme.Error
			if !errors.As(order.Error, &problem) {
				t.Fatalf("order error %T, want *acme.Error", order.Error)
			}
			wire.Error = &wireProblem{Type: problem.ProblemType, Detail: problem.Detail, Instance: problem.Instance,
				Status: problem.StatusCode, Subproblems: problem.Subproblems}
		}
		encoded, err := json.Marshal(wire)
		if err != nil {
			t.Fatalf("re-encoding the order: %v", err)
		}
		again, err := decodeOrder(bytes.NewReader(encoded))
		if err != nil {
			t.Fatalf("decoding the re-encoded order %s: %v", encoded, err)
		}
		if !again.Expires.Equal(order.Expires) {
			t.Fatalf("expires changed in the round trip: %v, then %v", order.Expires, again.Expires)
		}
		again.Expires, order.Expires = time.Time{}, time.Time{}
		if !reflect.DeepEqual(again, order) {
			t.Fatalf("order changed in the round trip:\n%#v\n%#v", order, again)
		}
	})
}

// FuzzECDSAJWSSignature checks the conversion of an ECDSA signer's ASN.1 signature into the
// fixed-size r||s a JWS carries. A signer may be an HSM or a KMS, so its answer is not trusted:
// the conversion refuses what does not fit (it must not panic) and what it accepts decodes back
// to the same r and s.
func FuzzECDSAJWSSignature(f *testing.F) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		key, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			f.Fatal(err)
		}
		digest := sha256.Sum256([]byte("payload"))
		signature, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(signature, (curve.Params().BitSize+7)/8)
	}
	f.Fuzz(func(t *testing.T, der []byte, size int) {
		size = (size%67 + 67) % 67 // up to P-521's 66 bytes
		out, err := ecdsaJWSSignature(der, size)
		if err != nil {
			return
		}
		if len(out) != 2*size {
			t.Fatalf("signature of %d bytes for size %d", len(out), size)
		}
		var sig struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &sig); err != nil {
			t.Fatalf("accepted a signature asn1 refuses: %v", err)
		}
		if r, s := new(big.Int).SetBytes(out[:size]), new(big.Int).SetBytes(out[size:]); r.Cmp(sig.R) != 0 || s.Cmp(sig.S) != 0 {
			t.Fatalf("r, s = %v, %v became %v, %v", sig.R, sig.S, r, s)
		}
	})
}
