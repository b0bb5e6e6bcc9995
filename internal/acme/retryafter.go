package acme

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// DefaultRetryAfter is how long to wait before polling again when the server does not say.
	// RFC 8555 leaves the interval to the client; one second matches x/crypto's own polling and
	// keeps issuance quick, and a real CA answers pending objects cheaply.
	DefaultRetryAfter = time.Second
	// MinRetryAfter bounds what a server's Retry-After can ask for from below, so that an
	// HTTP-date already in the past (Pebble sends whole-second dates) does not requeue at once.
	MinRetryAfter = time.Second
	// maxRetryAfter keeps absurd values from overflowing a time.Duration.
	maxRetryAfter = 30 * 24 * time.Hour
)

// retryAfterRecorder is an http.RoundTripper that remembers the Retry-After header of the last
// response for each request URL. x/crypto reads Retry-After only inside its sleeping helpers and
// does not return it, so this is where a non-blocking caller gets it from.
type retryAfterRecorder struct {
	base http.RoundTripper

	mu     sync.Mutex
	values map[string]time.Duration
}

func (r *retryAfterRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := r.base.RoundTrip(req)
	if err != nil || req.Method == http.MethodHead {
		return res, err
	}
	key := req.URL.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	if d, ok := parseRetryAfter(res.Header.Get("Retry-After"), time.Now()); ok {
		r.values[key] = d
	} else {
		delete(r.values, key)
	}
	return res, nil
}

// get returns the Retry-After of the last response from url, or DefaultRetryAfter. Entries stay
// until the next response from the same URL replaces or clears them; the map is bounded by the
// number of distinct URLs (orders and authorizations) the client polls.
func (r *retryAfterRecorder) get(url string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d, ok := r.values[url]; ok {
		return d
	}
	return DefaultRetryAfter
}

// forget drops what was recorded for url, for objects that reached a final state.
func (r *retryAfterRecorder) forget(url string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.values, url)
}

// parseRetryAfter parses a Retry-After value, delay-seconds or an HTTP-date, clamped to at least
// MinRetryAfter.
func parseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	var d time.Duration
	if seconds, err := strconv.ParseInt(value, 10, 64); err == nil {
		if seconds < 0 {
			return 0, false
		}
		d = time.Duration(min(seconds, int64(maxRetryAfter/time.Second))) * time.Second
	} else if date, err := http.ParseTime(value); err == nil {
		d = date.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, MinRetryAfter), maxRetryAfter), true
}
