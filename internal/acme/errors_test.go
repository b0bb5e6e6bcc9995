package acme

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

func TestIsPermanent(t *testing.T) {
	problem := func(status int, problemType string) *acme.Error {
		return &acme.Error{StatusCode: status, ProblemType: problemType}
	}
	tests := map[string]struct {
		err  error
		want bool
	}{
		"nil":                   {err: nil},
		"network":               {err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}},
		"deadline":              {err: context.DeadlineExceeded},
		"plain error":           {err: errors.New("something")},
		"client-side permanent": {err: permanent(errors.New("no DNS names")), want: true},
		"wrapped client-side":   {err: fmt.Errorf("creating order: %w", permanent(errors.New("x"))), want: true},
		"rejectedIdentifier":    {err: problem(400, problemPrefix+"rejectedIdentifier"), want: true},
		"malformed":             {err: problem(400, problemPrefix+"malformed"), want: true},
		"badCSR":                {err: problem(400, problemPrefix+"badCSR"), want: true},
		"caa":                   {err: problem(403, problemPrefix+"caa"), want: true},
		"unauthorized":          {err: problem(403, problemPrefix+"unauthorized"), want: true},
		// Not permanent: registering the account again cures it (IsAccountGone).
		"accountDoesNotExist": {err: problem(400, problemPrefix+"accountDoesNotExist"), want: false},
		"externalAccountReq":  {err: problem(403, problemPrefix+"externalAccountRequired"), want: true},
		"wrapped problem":     {err: fmt.Errorf("finalizing: %w", problem(400, problemPrefix+"badCSR")), want: true},
		"pre-RFC namespace":   {err: problem(400, "urn:acme:error:malformed"), want: true},
		"badNonce":            {err: problem(400, problemPrefix+"badNonce")},
		"rateLimited":         {err: problem(429, problemPrefix+"rateLimited")},
		"serverInternal":      {err: problem(500, problemPrefix+"serverInternal")},
		"orderNotReady":       {err: problem(403, problemPrefix+"orderNotReady")},
		"connection":          {err: problem(400, problemPrefix+"connection")},
		"unknown type":        {err: problem(400, problemPrefix+"somethingNew")},
		"no document, 404":    {err: problem(404, ""), want: true},
		"no document, 429":    {err: problem(429, "")},
		"no document, 502":    {err: problem(502, "")},
		"compound, all permanent": {err: &acme.Error{StatusCode: 400, ProblemType: problemPrefix + "compound", Subproblems: []acme.Subproblem{
			{Type: problemPrefix + "rejectedIdentifier"}, {Type: problemPrefix + "caa"},
		}}, want: true},
		"compound, one transient": {err: &acme.Error{StatusCode: 400, ProblemType: problemPrefix + "compound", Subproblems: []acme.Subproblem{
			{Type: problemPrefix + "rejectedIdentifier"}, {Type: problemPrefix + "dns"},
		}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := IsPermanent(tc.err); got != tc.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	withHeader := func(value string) error {
		return fmt.Errorf("creating order: %w", &acme.Error{
			StatusCode:  429,
			ProblemType: problemPrefix + "rateLimited",
			Header:      http.Header{"Retry-After": []string{value}},
		})
	}
	tests := map[string]struct {
		err    error
		want   time.Duration
		wantOK bool
	}{
		"seconds":           {err: withHeader("120"), want: 2 * time.Minute, wantOK: true},
		"zero is clamped":   {err: withHeader("0"), want: MinRetryAfter, wantOK: true},
		"garbage":           {err: withHeader("soon")},
		"no header":         {err: &acme.Error{StatusCode: 503}},
		"not an ACME error": {err: errors.New("x")},
		"nil":               {err: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := RetryAfter(tc.err)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("RetryAfter = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		value  string
		want   time.Duration
		wantOK bool
	}{
		"seconds":        {value: "3", want: 3 * time.Second, wantOK: true},
		"spaces":         {value: " 3 ", want: 3 * time.Second, wantOK: true},
		"HTTP date":      {value: "Fri, 01 May 2026 12:00:10 GMT", want: 10 * time.Second, wantOK: true},
		"date in past":   {value: "Fri, 01 May 2026 11:59:59 GMT", want: MinRetryAfter, wantOK: true},
		"huge":           {value: "99999999999999", want: maxRetryAfter, wantOK: true},
		"negative":       {value: "-1"},
		"empty":          {value: ""},
		"not a duration": {value: "1s"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := parseRetryAfter(tc.value, now)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.value, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestHeaderRetryAfter: an HTTP-date is measured from the server's Date header, not from the
// local clock (years away here), so clock skew neither shortens nor stretches the wait.
func TestHeaderRetryAfter(t *testing.T) {
	tests := map[string]struct {
		header http.Header
		want   time.Duration
	}{
		"date against the server's Date": {header: http.Header{
			"Date": {"Sat, 01 May 2032 12:00:00 GMT"}, "Retry-After": {"Sat, 01 May 2032 12:30:00 GMT"},
		}, want: 30 * time.Minute},
		"seconds ignore Date": {header: http.Header{"Date": {"Sat, 01 May 2032 12:00:00 GMT"}, "Retry-After": {"90"}}, want: 90 * time.Second},
		"unreadable Date: the local clock (the date is long past)": {header: http.Header{
			"Date": {"yesterday"}, "Retry-After": {"Fri, 01 May 2020 12:30:00 GMT"},
		}, want: MinRetryAfter},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got, ok := headerRetryAfter(tc.header); !ok || got != tc.want {
				t.Errorf("headerRetryAfter = %v, %v; want %v, true", got, ok, tc.want)
			}
		})
	}
}

func TestProblemType(t *testing.T) {
	err := fmt.Errorf("x: %w", &acme.Error{ProblemType: problemPrefix + "rateLimited"})
	if got := ProblemType(err); got != "rateLimited" {
		t.Errorf("ProblemType = %q, want rateLimited", got)
	}
	if got := ProblemType(errors.New("x")); got != "" {
		t.Errorf("ProblemType(plain error) = %q, want empty", got)
	}
}

func TestReplayBadNonceOnly(t *testing.T) {
	tests := map[string]struct {
		n      int
		status int
		want   bool
	}{
		"badNonce, first":  {n: 1, status: 400, want: true},
		"badNonce, third":  {n: 3, status: 400, want: true},
		"badNonce, fourth": {n: 4, status: 400},
		"rate limited":     {n: 1, status: 429},
		"server error":     {n: 1, status: 503},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := replayBadNonceOnly(tc.n, nil, &http.Response{StatusCode: tc.status}) > 0
			if got != tc.want {
				t.Errorf("retry = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIsAccountGone(t *testing.T) {
	problem := func(status int, problemType string) *acme.Error {
		return &acme.Error{StatusCode: status, ProblemType: problemType}
	}
	tests := map[string]struct {
		err  error
		want bool
	}{
		"accountDoesNotExist":         {err: problem(400, problemPrefix+"accountDoesNotExist"), want: true},
		"kid of a reset CA":           {err: &acme.Error{StatusCode: 400, ProblemType: problemPrefix + "malformed", Detail: "Key ID (kid) in JWS header missing expected URL prefix"}, want: true},
		"another malformed request":   {err: &acme.Error{StatusCode: 400, ProblemType: problemPrefix + "malformed", Detail: "invalid CSR"}, want: false},
		"badNonce":                    {err: problem(400, problemPrefix+"badNonce"), want: false},
		"not an ACME problem":         {err: errors.New("connection refused"), want: false},
		"wrapped accountDoesNotExist": {err: fmt.Errorf("creating order: %w", problem(400, problemPrefix+"accountDoesNotExist")), want: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := IsAccountGone(tt.err); got != tt.want {
				t.Errorf("IsAccountGone(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
