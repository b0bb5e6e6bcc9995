package reliability

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// Faults the proxy injects.
const (
	faultNone        = ""
	faultTooMany     = "429"       // refused with rateLimited and a Retry-After, not forwarded
	faultError       = "500"       // refused with a bare 500, not forwarded
	faultLost        = "500-after" // forwarded (it took effect at the CA), answered with a bare 500
	faultTimeout     = "timeout"   // held unanswered until the client gives up
	faultSlow        = "slow"      // forwarded after a delay
	proxyMaxHold     = 40 * time.Second
	proxySlowDelay   = 2 * time.Second
	proxyRetryAfter  = 65 * time.Second // more than the first backoff step (1 min): it must be the CA's word that waits
	maxTooManyPerKey = 1                // each name is refused with 429 at most once: the second backoff step is 10 min
)

// faultRates are the chances, per request, of each fault.
type faultRates struct {
	TooMany, Error, Lost, Timeout, Slow float64
}

// proxyEntry is one request the proxy saw.
type proxyEntry struct {
	At         time.Time
	Method     string
	Path       string
	Subject    string // the DNS name the request is about, when known
	Fault      string
	Status     int
	RetryAfter time.Duration
}

// faultProxy is a TLS reverse proxy in front of Pebble's ACME port that injects faults at given
// rates and logs every request. It keeps the Host header, so Pebble writes the proxy's URLs
// into its answers (directory, orders, Location, Link) and checks the JWS url against them:
// every request of a client that starts at the proxy's directory goes through the proxy.
// Requests are attributed to the DNS name they are about: new-order by its payload, the order,
// authorization, challenge, finalize and certificate URLs by the answers that named them.
type faultProxy struct {
	server    *httptest.Server
	upstream  *url.URL
	transport http.RoundTripper
	rates     faultRates
	// faultsOn is cleared to let the last certificates through.
	faultsOn bool

	mu       sync.Mutex
	rng      *rand.Rand
	entries  []proxyEntry
	subjects map[string]string // URL path -> DNS name
	tooMany  map[string]int    // DNS name -> 429s sent
}

func startFaultProxy(t testing.TB, pebble *testenv.Pebble, rates faultRates, seed uint64) *faultProxy {
	t.Helper()
	upstream, err := url.Parse("https://" + pebble.ListenAddress)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{
		upstream: upstream, transport: pebble.HTTPClient().Transport, rates: rates, faultsOn: true,
		rng: rand.New(rand.NewPCG(seed, seed)), subjects: map[string]string{}, tooMany: map[string]int{},
	}
	p.server = httptest.NewUnstartedServer(p)
	p.server.StartTLS()
	t.Cleanup(p.server.Close)
	return p
}

// DirectoryURL is the ACME directory through the proxy.
func (p *faultProxy) DirectoryURL() string { return p.server.URL + "/dir" }

// CABundle is the PEM certificate the proxy serves (self-signed by httptest).
func (p *faultProxy) CABundle() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.server.Certificate().Raw})
}

func (p *faultProxy) setFaults(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faultsOn = on
}

// Entries returns a copy of the log.
func (p *faultProxy) Entries() []proxyEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.entries)
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	entry := proxyEntry{At: time.Now(), Method: r.Method, Path: r.URL.Path}
	p.mu.Lock()
	entry.Subject = p.subjectOf(r.URL.Path, body)
	entry.Fault = p.chooseFault(entry.Subject)
	if entry.Fault == faultTooMany {
		p.tooMany[entry.Subject]++
		entry.RetryAfter = proxyRetryAfter
	}
	p.mu.Unlock()

	switch entry.Fault {
	case faultTooMany:
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Retry-After", fmt.Sprint(int(proxyRetryAfter/time.Second)))
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"injected by the test proxy","status":429}`)
		entry.Status = http.StatusTooManyRequests
		p.record(entry)
		return
	case faultError:
		http.Error(w, "injected by the test proxy", http.StatusInternalServerError)
		entry.Status = http.StatusInternalServerError
		p.record(entry)
		return
	case faultTimeout:
		p.record(entry) // recorded when it arrived; answered never
		select {
		case <-r.Context().Done():
		case <-time.After(proxyMaxHold):
		}
		return
	case faultSlow:
		select {
		case <-r.Context().Done():
			return
		case <-time.After(proxySlowDelay):
		}
	}

	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream.String()+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host
	res, err := p.transport.RoundTrip(out)
	if err != nil {
		entry.Status = http.StatusBadGateway
		p.record(entry)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(res.Body)
	p.mu.Lock()
	p.learnSubjects(entry.Subject, res, answer)
	p.mu.Unlock()
	if entry.Fault == faultLost {
		entry.Status = http.StatusInternalServerError
		p.record(entry)
		http.Error(w, "injected by the test proxy after forwarding", http.StatusInternalServerError)
		return
	}
	for key, values := range res.Header {
		w.Header()[key] = values
	}
	w.WriteHeader(res.StatusCode)
	_, _ = w.Write(answer)
	entry.Status = res.StatusCode
	p.record(entry)
}

func (p *faultProxy) record(entry proxyEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.entries = append(p.entries, entry)
}

// chooseFault draws a fault; p.mu is held. A 429 goes only to requests about a known name, so
// that the test can tell whether that name's next request waited.
func (p *faultProxy) chooseFault(subject string) string {
	if !p.faultsOn {
		return faultNone
	}
	x := p.rng.Float64()
	for _, choice := range []struct {
		fault string
		rate  float64
	}{{faultTooMany, p.rates.TooMany}, {faultError, p.rates.Error}, {faultLost, p.rates.Lost}, {faultTimeout, p.rates.Timeout}, {faultSlow, p.rates.Slow}} {
		if x < choice.rate {
			if choice.fault == faultTooMany && (subject == "" || p.tooMany[subject] >= maxTooManyPerKey) {
				return faultNone
			}
			return choice.fault
		}
		x -= choice.rate
	}
	return faultNone
}

// subjectOf returns the DNS name a request is about; p.mu is held.
func (p *faultProxy) subjectOf(path string, body []byte) string {
	if subject, ok := p.subjects[path]; ok {
		return subject
	}
	if path != "/order-plz" {
		return ""
	}
	var jws struct {
		Payload string `json:"payload"`
	}
	if json.Unmarshal(body, &jws) != nil {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(jws.Payload)
	if err != nil {
		return ""
	}
	var order struct {
		Identifiers []struct {
			Value string `json:"value"`
		} `json:"identifiers"`
	}
	if json.Unmarshal(payload, &order) != nil || len(order.Identifiers) == 0 {
		return ""
	}
	return order.Identifiers[0].Value
}

// learnSubjects attributes the URLs an answer names to the request's name; p.mu is held.
func (p *faultProxy) learnSubjects(subject string, res *http.Response, answer []byte) {
	var object struct {
		Identifier *struct {
			Value string `json:"value"`
		} `json:"identifier"`
		Authorizations []string `json:"authorizations"`
		Finalize       string   `json:"finalize"`
		Certificate    string   `json:"certificate"`
		Challenges     []struct {
			URL string `json:"url"`
		} `json:"challenges"`
	}
	_ = json.Unmarshal(answer, &object)
	if object.Identifier != nil && object.Identifier.Value != "" {
		subject = object.Identifier.Value
	}
	if subject == "" {
		return
	}
	urls := append([]string{res.Header.Get("Location"), object.Finalize, object.Certificate}, object.Authorizations...)
	for _, challenge := range object.Challenges {
		urls = append(urls, challenge.URL)
	}
	for _, raw := range urls {
		if u, err := url.Parse(raw); err == nil && u.Path != "" {
			p.subjects[u.Path] = subject
		}
	}
}

// TestFaultsFlakyCAProxy: a proxy in front of Pebble answers some requests with 429 and a
// Retry-After, some with a bare 500 (before or after forwarding them), holds some until the
// client times out and delays others. Every certificate converges; no request about a name
// reaches the CA before the Retry-After it was given has passed; the request rate stays flat;
// no certificate is issued twice.
func TestFaultsFlakyCAProxy(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "rel-proxy", testenv.PebbleOptions{}, testenv.StackOptions{})
	rates := faultRates{TooMany: 0.03, Error: 0.05, Lost: 0.03, Timeout: 0.01, Slow: 0.05}
	proxy := startFaultProxy(t, s.Pebble, rates, 12)

	issuer := &certpilotv1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: s.Namespace + "-proxy"},
		Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
			Server:              proxy.DirectoryURL(),
			Email:               "ops@example.com",
			CABundle:            proxy.CABundle(),
			PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "proxy-account"},
		}},
	}
	if err := kube.Client.Create(ctx, issuer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Client.Delete(context.Background(), issuer) })
	testenv.Eventually(t, 2*time.Minute, "proxied ClusterIssuer Ready", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(issuer), issuer); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(issuer.Status.Conditions, certpilotv1alpha1.ConditionReady) {
			return fmt.Errorf("conditions %+v", issuer.Status.Conditions)
		}
		return nil
	})

	n := caBatch(t)
	before := countsAt(s.Pebble)
	started := time.Now()
	certs := make([]*certpilotv1alpha1.Certificate, 0, n)
	for i := range n {
		name := fmt.Sprintf("proxy-%d", i)
		cert := s.TLSALPN01Certificate(name, name+".proxy.test")
		cert.Spec.IssuerRef.Name = issuer.Name
		if err := kube.Client.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
	waitAllReady(t, certs, 6*time.Minute)
	converged := time.Since(started)
	checkStored(t, certs)
	got := countsAt(s.Pebble).since(before)

	entries := proxy.Entries()
	faults := map[string]int{}
	lostOrders := 0
	for _, entry := range entries {
		faults[entry.Fault]++
		if entry.Fault == faultLost && entry.Path == "/order-plz" {
			lostOrders++ // created at the CA, the answer lost: the client cannot know its URL
		}
	}
	checkIssuedOnce(t, got, n, lostOrders)
	checkRetryAfterHonoured(t, entries)
	perMinute := requestsPerMinute(entries, started)
	if perCert := float64(len(entries)) / float64(n); perCert > 40 {
		t.Errorf("%d requests for %d certificates (%.0f each): a storm", len(entries), n, perCert)
	}
	figure(t, "%d certificates through the proxy (rates %+v): %d requests, faults %v, requests per minute %v; %d orders (%d answers to new-order lost), %d issued at the CA; all Ready in %s",
		n, rates, len(entries), faults, perMinute, got.orders, lostOrders, got.issued, converged.Round(100*time.Millisecond))
}

// checkRetryAfterHonoured fails when a request about a name reached the proxy before the
// Retry-After of a 429 about that name had passed.
func checkRetryAfterHonoured(t testing.TB, entries []proxyEntry) {
	t.Helper()
	honoured := 0
	for i, refused := range entries {
		if refused.Fault != faultTooMany {
			continue
		}
		until := refused.At.Add(refused.RetryAfter)
		var next *proxyEntry
		for j := range entries {
			later := &entries[j]
			if j == i || later.Subject != refused.Subject || !later.At.After(refused.At) {
				continue
			}
			if later.At.Before(until) {
				t.Errorf("%s %s about %s came %s after a 429 with Retry-After %s", later.Method, later.Path, later.Subject,
					later.At.Sub(refused.At).Round(time.Millisecond), refused.RetryAfter)
			}
			if next == nil || later.At.Before(next.At) {
				next = later
			}
		}
		if next != nil {
			honoured++
			t.Logf("429 for %s (%s %s): next request about it %s later", refused.Subject, refused.Method, refused.Path, next.At.Sub(refused.At).Round(time.Millisecond))
		}
	}
	if honoured == 0 {
		t.Log("no 429 was followed by another request about its name: nothing to check")
	}
}

// requestsPerMinute counts the proxy's requests per minute since start.
func requestsPerMinute(entries []proxyEntry, start time.Time) []int {
	var counts []int
	for _, entry := range entries {
		minute := int(entry.At.Sub(start) / time.Minute)
		if minute < 0 {
			minute = 0
		}
		for len(counts) <= minute {
			counts = append(counts, 0)
		}
		counts[minute]++
	}
	return counts
}
