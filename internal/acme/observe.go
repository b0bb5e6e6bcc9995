package acme

import (
	"net/http"
	"strings"
	"time"
)

// observingTransport reports every request to an observer, with the endpoint named by Endpoint.
type observingTransport struct {
	base    http.RoundTripper
	observe func(endpoint string, status int, duration time.Duration)
}

func (t *observingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	started := time.Now()
	res, err := t.base.RoundTrip(req)
	status := 0
	if res != nil {
		status = res.StatusCode
	}
	t.observe(Endpoint(req.Method, req.URL.Path), status, time.Since(started))
	return res, err
}

// endpointWords map words of ACME URL paths to endpoint names. ACME servers choose their own
// paths (Let's Encrypt: /acme/new-order, /acme/order/…, /acme/authz/…, /acme/chall/…; Pebble:
// /order-plz, /my-order/…, /authZ/…, /chalZ/…); the words they use are few, and a bounded set of
// names keeps metric labels few.
var endpointWords = []struct{ word, endpoint string }{
	{"nonce", "newNonce"},
	{"new-acct", "newAccount"}, {"new-reg", "newAccount"}, {"sign-me-up", "newAccount"},
	{"new-order", "newOrder"}, {"order-plz", "newOrder"},
	{"finalize", "finalize"},
	{"renewal-info", "renewalInfo"}, {"renewalinfo", "renewalInfo"},
	{"authz", "authorization"},
	{"chal", "challenge"},
	{"cert", "certificate"},
	{"order", "order"},
	{"acct", "account"}, {"account", "account"}, {"reg", "account"},
	{"dir", "directory"},
}

// Endpoint names the ACME endpoint a request path belongs to ("other" when unknown).
func Endpoint(method, path string) string {
	path = strings.ToLower(path)
	for _, candidate := range endpointWords {
		if strings.Contains(path, candidate.word) {
			return candidate.endpoint
		}
	}
	return "other"
}
