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

// MaxPollInterval caps PollInterval's growth: a pending order or authorization is looked at at
// least once a minute.
const MaxPollInterval = time.Minute

// pollGrowthStart is how long an object polls every DefaultRetryAfter before PollInterval grows.
const pollGrowthStart = 10 * time.Second

// FirstPollInterval is the wait of an object younger than firstPolls: a CA that validates or
// issues in moments is seen within a quarter of a second instead of a second, at the cost of a
// few more requests for one that takes seconds. A server's Retry-After still wins.
const FirstPollInterval = 250 * time.Millisecond

// firstPolls is how long an object polls every FirstPollInterval.
const firstPolls = 2 * time.Second

// PollInterval returns how long to wait before polling a pending (or processing) order or
// authorization again. serverRetryAfter is the server's Retry-After (Order.ServerRetryAfter,
// Authorization.ServerRetryAfter; 0 when it sent none) and wins when set. Otherwise the wait is a
// pure function of pending, how long the object has been waiting (since the order was created
// or the challenge accepted): FirstPollInterval (250 ms) for the first 2 s, DefaultRetryAfter
// (1 s) until 10 s, then a tenth of pending, so a wait adds at most 10 % to the time an object
// takes, capped at MaxPollInterval. From 2 s on, the result is whole seconds.
func PollInterval(serverRetryAfter, pending time.Duration) time.Duration {
	if serverRetryAfter > 0 {
		return max(serverRetryAfter, MinRetryAfter)
	}
	if pending < firstPolls {
		return FirstPollInterval
	}
	if pending < pollGrowthStart {
		return DefaultRetryAfter
	}
	return min(max((pending/10).Truncate(time.Second), DefaultRetryAfter), MaxPollInterval)
}

// InlinePolls are the waits before each look a reconcile takes at an order it has just moved
// on (challenges accepted, CSR sent), while it still holds the order: most CAs validate and
// issue within moments, and a look a few tens of milliseconds later finishes the step in the
// same reconcile instead of a requeue (a whole reconcile, and a quarter of a second at least).
// Together they hold a worker at most 375 ms; an order still waiting after them is requeued
// with PollInterval.
var InlinePolls = []time.Duration{25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}

// InlineWait returns the wait before in-line look number i (from 0) at an object whose last
// answer carried serverRetryAfter (0: none), and false when no more in-line looks are due. The
// first look is always taken, as x/crypto's WaitOrder takes its first at once; after it, a
// server's Retry-After ends the in-line looks (the requeue honours it), and so does the end of
// InlinePolls.
func InlineWait(i int, serverRetryAfter time.Duration) (time.Duration, bool) {
	if i < 0 || i >= len(InlinePolls) || (i > 0 && serverRetryAfter > 0) {
		return 0, false
	}
	return InlinePolls[i], true
}

// maxRecordedRetryAfters bounds the URLs a retryAfterRecorder remembers.
const maxRecordedRetryAfters = 4096

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
	if d, ok := headerRetryAfter(res.Header); ok {
		if len(r.values) >= maxRecordedRetryAfters {
			// A server naming a new URL in every answer: start over rather than grow.
			clear(r.values)
		}
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
	if d, ok := r.lookup(url); ok {
		return d
	}
	return DefaultRetryAfter
}

// lookup returns the Retry-After of the last response from url, if it had one.
func (r *retryAfterRecorder) lookup(url string) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.values[url]
	return d, ok
}

// forget drops what was recorded for url, for objects that reached a final state.
func (r *retryAfterRecorder) forget(url string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.values, url)
}

// headerRetryAfter reads a response's Retry-After. An HTTP-date is measured from the response's
// own Date header when it has one (the server's clock, so a skewed local clock, or a test CA on
// a simulated one, neither shortens nor stretches the wait), else from the local clock.
func headerRetryAfter(header http.Header) (time.Duration, bool) {
	now := time.Now()
	if date, err := http.ParseTime(header.Get("Date")); err == nil {
		now = date
	}
	return parseRetryAfter(header.Get("Retry-After"), now)
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
