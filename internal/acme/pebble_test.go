package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// flowTimeout bounds every ACME flow; an issuance against Pebble takes about a second.
const flowTimeout = 30 * time.Second

func newClient(t *testing.T, ctx context.Context, pebble *testenv.Pebble) *acme.Client {
	t.Helper()
	key, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	client, err := acme.New(ctx, acme.Options{
		DirectoryURL: pebble.DirectoryURL(),
		AccountKey:   key,
		CABundle:     pebble.CABundle,
		UserAgent:    "certpilot-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func registeredClient(t *testing.T, ctx context.Context, pebble *testenv.Pebble) *acme.Client {
	t.Helper()
	client := newClient(t, ctx, pebble)
	if _, err := client.Register(ctx, "admin@example.test", nil); err != nil {
		t.Fatal(err)
	}
	return client
}

// solver publishes the response to one challenge of an authorization.
type solver struct {
	challengeType string
	publish       func(authz *acme.Authorization, challenge acme.Challenge) error
}

// issue runs a whole issuance the way a reconciler would, one call per step, and waits between
// steps for the server's RetryAfter (here, in the test, instead of requeueing).
func issue(t *testing.T, ctx context.Context, client *acme.Client, names []string, profile string, solve solver) (chain [][]byte, order *acme.Order) {
	t.Helper()
	return issueOrder(t, ctx, client, acme.OrderRequest{Identifiers: names, Profile: profile}, solve)
}

// issueOrder is issue for any order request (one with Replaces, for example).
func issueOrder(t *testing.T, ctx context.Context, client *acme.Client, request acme.OrderRequest, solve solver) (chain [][]byte, order *acme.Order) {
	t.Helper()
	names := request.Identifiers
	order, err := client.CreateOrder(ctx, request)
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	if order.Status != acme.StatusPending && order.Status != acme.StatusReady {
		t.Fatalf("new order is %s, want pending (or ready: Pebble reuses a valid authorization 1 time in 100 even at PEBBLE_AUTHZREUSE=0)", order.Status)
	}
	for _, authzURL := range order.AuthzURLs {
		authz, err := client.GetAuthorization(ctx, authzURL)
		if err != nil {
			t.Fatalf("GetAuthorization: %v", err)
		}
		if authz.Status == acme.StatusValid {
			continue // reused (see above)
		}
		challenge, ok := authz.Challenge(solve.challengeType)
		if !ok {
			t.Fatalf("authorization for %s offers no %s challenge", authz.Identifier, solve.challengeType)
		}
		if err := solve.publish(authz, challenge); err != nil {
			t.Fatalf("publishing the %s response for %s: %v", solve.challengeType, authz.Identifier, err)
		}
		if err := client.Accept(ctx, challenge.URL); err != nil {
			t.Fatalf("Accept: %v", err)
		}
	}
	order = waitOrder(t, ctx, client, order, acme.StatusReady)

	key, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, names)
	if err != nil {
		t.Fatal(err)
	}
	finalized, err := client.Finalize(ctx, order, csr)
	if err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	if finalized.URL != order.URL {
		t.Errorf("Finalize returned order URL %q, want %q", finalized.URL, order.URL)
	}
	// A caller that lost track and finalizes again only gets the order's state back.
	again, err := client.Finalize(ctx, finalized, csr)
	if err != nil {
		t.Fatalf("second Finalize: %v", err)
	}
	if again.Status != acme.StatusProcessing && again.Status != acme.StatusValid {
		t.Errorf("second Finalize: order is %s, want processing or valid", again.Status)
	}
	order = waitOrder(t, ctx, client, finalized, acme.StatusValid)
	chain, err = client.FetchCertificate(ctx, order.CertURL)
	if err != nil {
		t.Fatalf("FetchCertificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if !pki.KeyMatches(leaf, key) {
		t.Error("issued certificate does not carry the CSR's key")
	}
	return chain, order
}

// waitOrder polls the order until it reaches want, sleeping its RetryAfter between polls.
func waitOrder(t *testing.T, ctx context.Context, client *acme.Client, order *acme.Order, want string) *acme.Order {
	t.Helper()
	for order.Status != want {
		switch order.Status {
		case acme.StatusPending, acme.StatusProcessing, acme.StatusReady:
		default:
			t.Fatalf("order %s is %s (error: %v) while waiting for %s%s", order.URL, order.Status, order.Error, want, authzErrors(ctx, client, order))
		}
		if order.RetryAfter < acme.MinRetryAfter {
			t.Fatalf("order RetryAfter = %v, want at least %v", order.RetryAfter, acme.MinRetryAfter)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("order %s still %s, waiting for %s: %v", order.URL, order.Status, want, ctx.Err())
		case <-time.After(order.RetryAfter):
		}
		var err error
		if order, err = client.GetOrder(ctx, order.URL); err != nil {
			t.Fatalf("GetOrder: %v", err)
		}
	}
	return order
}

func authzErrors(ctx context.Context, client *acme.Client, order *acme.Order) string {
	var out string
	for _, url := range order.AuthzURLs {
		authz, err := client.GetAuthorization(ctx, url)
		if err != nil {
			continue
		}
		for _, challenge := range authz.Challenges {
			if challenge.Error != nil {
				out += fmt.Sprintf("\n  %s %s: %v", authz.Identifier, challenge.Type, challenge.Error)
			}
		}
	}
	return out
}

// verifyIssued checks the leaf's names and that the chain leads to Pebble's root.
func verifyIssued(t *testing.T, pebble *testenv.Pebble, chain [][]byte, names []string) *x509.Certificate {
	t.Helper()
	if len(chain) < 2 {
		t.Fatalf("chain has %d certificates, want leaf and intermediate", len(chain))
	}
	leaf, err := pki.ParseLeaf(pki.EncodeChain(chain))
	if err != nil {
		t.Fatal(err)
	}
	if !pki.DNSNamesEqual(leaf, names) {
		t.Errorf("leaf names = %v, want %v", leaf.DNSNames, names)
	}
	rootPEM, err := pebble.Roots()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("Pebble's /roots/0 holds no certificate: %q", rootPEM)
	}
	intermediates := x509.NewCertPool()
	for _, der := range chain[1:] {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		intermediates.AddCert(cert)
	}
	for _, name := range names {
		if wildcard, ok := cutWildcard(name); ok {
			name = "anything." + wildcard
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: intermediates}); err != nil {
			t.Errorf("verifying the leaf for %s against Pebble's root: %v", name, err)
		}
	}
	return leaf
}

func cutWildcard(name string) (string, bool) {
	if len(name) > 2 && name[:2] == "*." {
		return name[2:], true
	}
	return name, false
}

// tlsALPNResponder answers acme-tls/1 handshakes on Pebble's TLS port, by SNI.
type tlsALPNResponder struct {
	mu    sync.Mutex
	certs map[string]*tls.Certificate
}

func startTLSALPNResponder(t *testing.T, port int) *tlsALPNResponder {
	t.Helper()
	responder := &tlsALPNResponder{certs: map[string]*tls.Certificate{}}
	serveACMETLS(t, "127.0.0.1", port, func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if !slices.Contains(hello.SupportedProtos, "acme-tls/1") {
			return nil, errors.New("not an ACME validation")
		}
		responder.mu.Lock()
		defer responder.mu.Unlock()
		if cert, ok := responder.certs[hello.ServerName]; ok {
			return cert, nil
		}
		return nil, fmt.Errorf("no challenge certificate for %q", hello.ServerName)
	})
	return responder
}

// serveACMETLS completes acme-tls/1 handshakes on host:port with getCertificate's certificates,
// until the test ends.
func serveACMETLS(t *testing.T, host string, port int, getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)) {
	t.Helper()
	listener, err := tls.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)), &tls.Config{
		NextProtos: []string{acme.ALPNProtocol}, GetCertificate: getCertificate,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Close() })
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_ = conn.(*tls.Conn).Handshake()
			}()
		}
	}()
}

func (r *tlsALPNResponder) set(domain string, cert tls.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.certs[domain] = &cert
}

// http01Responder answers http-01 requests on Pebble's HTTP port.
type http01Responder struct {
	mu     sync.Mutex
	bodies map[string]string // path -> key authorization
}

func startHTTP01Responder(t *testing.T, port int) *http01Responder {
	t.Helper()
	responder := &http01Responder{bodies: map[string]string{}}
	listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	server := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			responder.mu.Lock()
			body, ok := responder.bodies[req.URL.Path]
			responder.mu.Unlock()
			if !ok {
				http.NotFound(w, req)
				return
			}
			_, _ = w.Write([]byte(body))
		}),
	}
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(func() { server.Close() })
	return responder
}

func (r *http01Responder) set(path, body string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies[path] = body
}

func dns01Solver(client *acme.Client, pebble *testenv.Pebble) solver {
	return solver{acme.ChallengeDNS01, func(authz *acme.Authorization, challenge acme.Challenge) error {
		name := authz.Identifier
		if authz.Wildcard {
			name = "*." + name
		}
		fqdn, value, err := client.DNS01Record(name, challenge.Token)
		if err != nil {
			return err
		}
		return pebble.SetTXT(fqdn, value)
	}}
}

func TestIssuance(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	// The subtests run in parallel, after this function returns: cancel when they are done.
	t.Cleanup(cancel)
	client := registeredClient(t, ctx, pebble)

	tlsALPN := startTLSALPNResponder(t, pebble.TLSPort)
	http01 := startHTTP01Responder(t, pebble.HTTPPort)

	tests := []struct {
		name  string
		names []string
		solve solver
	}{
		{
			name:  "tls-alpn-01",
			names: []string{"alpn.example.test", "www.alpn.example.test"},
			solve: solver{acme.ChallengeTLSALPN01, func(authz *acme.Authorization, challenge acme.Challenge) error {
				cert, err := client.TLSALPN01Certificate(challenge.Token, authz.Identifier)
				if err != nil {
					return err
				}
				keyAuthorization, err := client.KeyAuthorization(challenge.Token)
				if err != nil {
					return err
				}
				leaf, err := x509.ParseCertificate(cert.Certificate[0])
				if err != nil {
					return err
				}
				if err := acme.VerifyTLSALPN01Certificate(leaf, authz.Identifier, keyAuthorization); err != nil {
					return err
				}
				tlsALPN.set(authz.Identifier, cert)
				return nil
			}},
		},
		{
			name:  "http-01",
			names: []string{"http.example.test"},
			solve: solver{acme.ChallengeHTTP01, func(authz *acme.Authorization, challenge acme.Challenge) error {
				path, body, err := client.HTTP01Response(challenge.Token)
				if err != nil {
					return err
				}
				http01.set(path, body)
				return nil
			}},
		},
		{
			name:  "dns-01",
			names: []string{"dns.example.test"},
			solve: dns01Solver(client, pebble),
		},
		{
			// The wildcard and its base domain have one TXT name and need both values;
			// challtestsrv's set-txt adds a value, it does not replace.
			name:  "dns-01 wildcard and base domain",
			names: []string{"example.test", "*.example.test"},
			solve: dns01Solver(client, pebble),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			chain, order := issue(t, ctx, client, tc.names, "", tc.solve)
			verifyIssued(t, pebble, chain, tc.names)
			if order.Profile != "default" {
				t.Errorf("order profile = %q, want default", order.Profile)
			}
			t.Logf("Issued %v in %v", tc.names, time.Since(start).Round(time.Millisecond))
		})
	}
}

// Issuance survives Pebble rejecting good nonces: x/crypto's requests and the package's own
// signed finalize replay them at once.
func TestBadNonceReplay(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{NonceRejectPercent: 10})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	t.Cleanup(cancel)

	// Count the rejections through Options.HTTPClient; rejections are random, so the count is
	// only logged.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pebble.CABundle)
	counter := &badRequestCounter{base: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	key, err := pki.GenerateKey(pki.RSA, 2048) // RS256 for the package's own signed finalize
	if err != nil {
		t.Fatal(err)
	}
	client, err := acme.New(ctx, acme.Options{
		DirectoryURL: pebble.DirectoryURL(),
		AccountKey:   key,
		HTTPClient:   &http.Client{Transport: counter, Timeout: 10 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Register(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { t.Logf("Pebble rejected %d good nonces; all were replayed", counter.count.Load()) })
	for i := range 3 {
		names := []string{fmt.Sprintf("nonce%d.example.test", i)}
		t.Run(names[0], func(t *testing.T) {
			t.Parallel()
			chain, _ := issue(t, ctx, client, names, "", dns01Solver(client, pebble))
			verifyIssued(t, pebble, chain, names)
		})
	}
}

type badRequestCounter struct {
	base  http.RoundTripper
	count atomic.Int64
}

func (c *badRequestCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := c.base.RoundTrip(req)
	if err == nil && res.StatusCode == http.StatusBadRequest {
		c.count.Add(1)
	}
	return res, err
}

func TestProfile(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{
		Profiles: map[string]testenv.PebbleProfile{"short": {Description: "expires in five minutes", ValidityPeriod: 5 * time.Minute}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	client := registeredClient(t, ctx, pebble)

	names := []string{"short.example.test"}
	chain, order := issue(t, ctx, client, names, "short", dns01Solver(client, pebble))
	leaf := verifyIssued(t, pebble, chain, names)
	if order.Profile != "short" {
		t.Errorf("order profile = %q, want short", order.Profile)
	}
	// Pebble's validity is inclusive of the last second.
	if lifetime := leaf.NotAfter.Sub(leaf.NotBefore); lifetime < 5*time.Minute-time.Second || lifetime > 5*time.Minute+time.Second {
		t.Errorf("leaf lifetime = %v, want 5m", lifetime)
	}

	if err := pebble.SetRenewalInfo(pki.EncodeChain(chain[:1]), `{"suggestedWindow":{"start":"2026-01-01T00:00:00Z","end":"2026-01-02T00:00:00Z"}}`); err != nil {
		t.Errorf("SetRenewalInfo for an issued certificate: %v", err)
	}
	if profiles := client.Profiles(); !slices.Equal(profiles, []string{"default", "short"}) {
		t.Errorf("Profiles() = %v, want [default short]", profiles)
	}

	_, err := client.NewOrder(ctx, names, "shortlived")
	if err == nil || !acme.IsPermanent(err) {
		t.Errorf("NewOrder with a profile Pebble does not offer: %v, want a permanent error", err)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	client := newClient(t, ctx, pebble)

	first, err := client.Register(ctx, "admin@example.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := client.Register(ctx, "admin@example.test", nil)
	if err != nil {
		t.Fatalf("second Register: %v", err)
	}
	if first == "" || first != second {
		t.Errorf("Register returned %q, then %q: want the same account URL", first, second)
	}
	if client.AccountURI() != first {
		t.Errorf("AccountURI() = %q, want %q", client.AccountURI(), first)
	}
}

func TestRegisterExternalAccountBinding(t *testing.T) {
	t.Parallel()
	hmacKey := make([]byte, 32)
	if _, err := rand.Read(hmacKey); err != nil {
		t.Fatal(err)
	}
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{
		ExternalAccountBindingRequired: true,
		ExternalAccountMACKeys:         map[string]string{"kid-1": base64.RawURLEncoding.EncodeToString(hmacKey)},
	})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()

	_, err := newClient(t, ctx, pebble).Register(ctx, "", nil)
	if err == nil {
		t.Fatal("Register without EAB succeeded on a server that requires it")
	}
	if !acme.IsPermanent(err) {
		t.Errorf("Register without EAB: %v, want a permanent error", err)
	}

	wrongKey := slices.Clone(hmacKey)
	wrongKey[0] ^= 0xff
	_, err = newClient(t, ctx, pebble).Register(ctx, "", &acme.ExternalAccountBinding{KeyID: "kid-1", HMACKey: wrongKey})
	if err == nil || !acme.IsPermanent(err) {
		t.Errorf("Register with a wrong EAB MAC key: %v, want a permanent error", err)
	}

	client := newClient(t, ctx, pebble)
	uri, err := client.Register(ctx, "admin@example.test", &acme.ExternalAccountBinding{KeyID: "kid-1", HMACKey: hmacKey})
	if err != nil {
		t.Fatalf("Register with EAB: %v", err)
	}
	again, err := client.Register(ctx, "admin@example.test", &acme.ExternalAccountBinding{KeyID: "kid-1", HMACKey: hmacKey})
	if err != nil || again != uri {
		t.Errorf("second Register with EAB = %q, %v; want %q", again, err, uri)
	}
}

func TestPermanentErrors(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	client := registeredClient(t, ctx, pebble)

	_, err := client.NewOrder(ctx, []string{"not a domain!"}, "")
	if err == nil {
		t.Fatal("NewOrder for an invalid identifier succeeded")
	}
	if !acme.IsPermanent(err) {
		t.Errorf("NewOrder for an invalid identifier: %v (problem %q), want a permanent error", err, acme.ProblemType(err))
	}

	// Finalize with a CSR for other names than the order's.
	order, err := client.NewOrder(ctx, []string{"csr.example.test"}, "")
	if err != nil {
		t.Fatal(err)
	}
	authz, err := client.GetAuthorization(ctx, order.AuthzURLs[0])
	if err != nil {
		t.Fatal(err)
	}
	challenge, _ := authz.Challenge(acme.ChallengeDNS01)
	if err := dns01Solver(client, pebble).publish(authz, challenge); err != nil {
		t.Fatal(err)
	}
	if err := client.Accept(ctx, challenge.URL); err != nil {
		t.Fatal(err)
	}
	order = waitOrder(t, ctx, client, order, acme.StatusReady)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, []string{"other.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Finalize(ctx, order, csr)
	if err == nil || !acme.IsPermanent(err) {
		t.Errorf("Finalize with a CSR for other names: %v (problem %q), want a permanent error", err, acme.ProblemType(err))
	}
}

// A failed validation invalidates the order. Its problem (Pebble and Let's Encrypt say
// unauthorized for a missing or wrong response) describes the validation, not a request: a new
// order may succeed once the response is served, so the caller backs off rather than stalls.
func TestFailedValidation(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	client := registeredClient(t, ctx, pebble)

	order, err := client.NewOrder(ctx, []string{"unsolved.example.test"}, "")
	if err != nil {
		t.Fatal(err)
	}
	authz, err := client.GetAuthorization(ctx, order.AuthzURLs[0])
	if err != nil {
		t.Fatal(err)
	}
	challenge, _ := authz.Challenge(acme.ChallengeDNS01)
	// No TXT record published: validation fails and the order becomes invalid.
	if err := client.Accept(ctx, challenge.URL); err != nil {
		t.Fatal(err)
	}
	for authz.Status == acme.StatusPending {
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(authz.RetryAfter):
		}
		if authz, err = client.GetAuthorization(ctx, authz.URL); err != nil {
			t.Fatal(err)
		}
	}
	if authz.Status != acme.StatusInvalid {
		t.Fatalf("authorization is %s, want invalid", authz.Status)
	}
	failed, _ := authz.Challenge(acme.ChallengeDNS01)
	if failed.Error == nil {
		t.Fatal("invalid challenge carries no error")
	}
	if problem := acme.ProblemType(failed.Error); problem != "unauthorized" {
		t.Errorf("validation failure %v has problem type %q, want unauthorized", failed.Error, problem)
	}
	order, err = client.GetOrder(ctx, order.URL)
	if err != nil {
		t.Fatal(err)
	}
	if order.Status != acme.StatusInvalid {
		t.Errorf("order is %s, want invalid", order.Status)
	}
}

// TestOwnNoncesReused: the package's own signed requests (finalize) take the nonce an earlier
// one of them received instead of asking newNonce each time.
func TestOwnNoncesReused(t *testing.T) {
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	t.Cleanup(cancel)
	key, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	var newNonces atomic.Int64
	client, err := acme.New(ctx, acme.Options{
		DirectoryURL: pebble.DirectoryURL(),
		AccountKey:   key,
		CABundle:     pebble.CABundle,
		ObserveRequest: func(endpoint string, _ int, _ time.Duration) {
			if endpoint == "newNonce" {
				newNonces.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Register(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	issue(t, ctx, client, []string{"nonce-first.example.test"}, "", dns01Solver(client, pebble))
	before := newNonces.Load()
	chain, _ := issue(t, ctx, client, []string{"nonce-second.example.test"}, "", dns01Solver(client, pebble))
	verifyIssued(t, pebble, chain, []string{"nonce-second.example.test"})
	if fetched := newNonces.Load() - before; fetched != 0 {
		t.Errorf("the second issuance asked newNonce %d times, want 0 (x/crypto's pool and the package's own serve it)", fetched)
	}
}
