package edge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"golang.org/x/crypto/acme"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/testenv"
)

// seen is what an echo upstream saw of a request.
type seen struct {
	Upstream, Host, Path, Proto string
	Header                      http.Header
}

// startEcho starts an HTTP upstream that answers with what it saw, as JSON, and upgrades
// "Upgrade: echo" requests (a WebSocket stand-in) to a byte echo.
func startEcho(t *testing.T, name string) *httptest.Server {
	t.Helper()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" {
			conn, buffered, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			_, _ = buffered.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			_ = buffered.Flush()
			_, _ = io.Copy(conn, buffered)
			return
		}
		_ = json.NewEncoder(w).Encode(seen{Upstream: name, Host: r.Host, Path: r.URL.Path, Proto: r.Proto, Header: r.Header})
	}))
	t.Cleanup(upstream.Close)
	return upstream
}

// clientTo returns an HTTPS client that connects every name to address, trusting nothing in
// particular (the tests check what was served). protocol "h2" or "http/1.1" limits what it
// offers; "" offers both.
func clientTo(address string, protocol ...string) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(len(protocol) == 0 || protocol[0] == "http/1.1")
	protocols.SetHTTP2(len(protocol) == 0 || protocol[0] == "h2")
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, address)
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		Protocols:       protocols,
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func getSeen(t *testing.T, client *http.Client, url string) (int, seen) {
	t.Helper()
	response, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer response.Body.Close()
	var got seen
	if response.StatusCode == http.StatusOK {
		if err := json.NewDecoder(response.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
	}
	return response.StatusCode, got
}

func routeFile(routes ...string) []byte {
	return []byte("routes:\n" + strings.Join(routes, "\n") + "\ntimeouts: {dial: 1s, responseHeader: 5s}\n")
}

func TestTerminate(t *testing.T) {
	ctx := testContext(t)
	web, api, other := startEcho(t, "web"), startEcho(t, "api"), startEcho(t, "other")
	routes := edge.NewRoutes(edge.ModeTerminate)
	if err := routes.Load(routeFile(
		"- {host: a.example.com, upstream: "+web.URL+"}",
		"- {host: a.example.com, pathPrefix: /api, upstream: "+api.URL+"}",
		"- {host: '*.example.com', upstream: "+other.URL+"}",
		"- {host: down.example.com, upstream: 'http://127.0.0.1:1'}",
	)); err != nil {
		t.Fatal(err)
	}
	certificates := edge.NewCertificateStore()
	certificates.Replace("test", []*tls.Certificate{
		edgetest.SelfSignedCertificate(t, "a.example.com", "*.example.com"), edgetest.SelfSignedCertificate(t, "no-route.test"),
	})
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()
	running := startServer(t, edge.Options{Challenges: challenges, Certificates: certificates, Routes: routes,
		RedirectHTTP: true, Log: testr.New(t)})
	client := clientTo(running.httpsAddress)
	defer client.CloseIdleConnections()

	for name, test := range map[string]struct {
		url, upstream, path string
	}{
		"host":                    {"https://a.example.com/x", "web", "/x"},
		"path prefix":             {"https://a.example.com/api/v1", "api", "/api/v1"},
		"prefix is a whole label": {"https://a.example.com/apix", "web", "/apix"},
		"wildcard":                {"https://b.example.com/", "other", "/"},
	} {
		t.Run(name, func(t *testing.T) {
			status, got := getSeen(t, client, test.url)
			if status != http.StatusOK || got.Upstream != test.upstream || got.Path != test.path {
				t.Fatalf("got %d from %q path %q, want %s %s", status, got.Upstream, got.Path, test.upstream, test.path)
			}
			host := strings.Split(strings.TrimPrefix(test.url, "https://"), "/")[0]
			if got.Host != host || got.Header.Get("X-Forwarded-Host") != host ||
				got.Header.Get("X-Forwarded-Proto") != "https" || got.Header.Get("X-Forwarded-For") != "127.0.0.1" {
				t.Errorf("upstream saw Host %q and X-Forwarded-* %v", got.Host, got.Header)
			}
		})
	}

	t.Run("hop-by-hop and spoofed headers stay out", func(t *testing.T) {
		request, err := http.NewRequest(http.MethodGet, "https://a.example.com/h", nil)
		if err != nil {
			t.Fatal(err)
		}
		for name, value := range map[string]string{
			"Connection": "keep-alive, X-Hop", "X-Hop": "1", "Keep-Alive": "timeout=5",
			"X-Forwarded-For": "192.0.2.66", "X-Forwarded-Host": "evil.example", "Forwarded": "for=192.0.2.66", "X-End": "kept",
		} {
			request.Header.Set(name, value)
		}
		response, err := clientTo(running.httpsAddress, "http/1.1").Do(request)
		if err != nil {
			t.Fatal(err)
		}
		defer response.Body.Close()
		var got seen
		if err := json.NewDecoder(response.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"X-Hop", "Keep-Alive", "Forwarded"} {
			if value := got.Header.Get(name); value != "" {
				t.Errorf("the upstream got %s: %q", name, value)
			}
		}
		if got.Header.Get("X-Forwarded-For") != "127.0.0.1" || got.Header.Get("X-Forwarded-Host") != "a.example.com" ||
			got.Header.Get("X-End") != "kept" {
			t.Errorf("upstream saw %v", got.Header)
		}
	})

	t.Run("an upstream that does not answer in time gets 504", func(t *testing.T) {
		release := make(chan struct{})
		silent := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
		defer silent.Close()
		defer close(release)
		timeoutRoutes := edge.NewRoutes(edge.ModeTerminate)
		if err := timeoutRoutes.Load([]byte("routes: [{host: '*', upstream: '" + silent.URL + "'}]\ntimeouts: {responseHeader: 1s}\n")); err != nil {
			t.Fatal(err)
		}
		slow := startServer(t, edge.Options{Challenges: challenges, Certificates: certificates, Routes: timeoutRoutes, Log: testr.New(t)})
		for _, protocol := range []string{"http/1.1", "h2"} {
			started := time.Now()
			status, _, err := get(ctx, clientTo(slow.httpsAddress, protocol), "https://a.example.com/")
			if err != nil || status != http.StatusGatewayTimeout || time.Since(started) > 5*time.Second {
				t.Errorf("%s: %d, %v after %v; want 504 after about 1s", protocol, status, err, time.Since(started))
			}
		}
	})

	t.Run("HTTP/2 and HTTP/1.1 clients", func(t *testing.T) {
		for _, protocol := range []string{"h2", "http/1.1"} {
			response, err := clientTo(running.httpsAddress, protocol).Get("https://a.example.com/")
			if err != nil {
				t.Fatal(err)
			}
			response.Body.Close()
			if want := map[string]int{"h2": 2, "http/1.1": 1}[protocol]; response.ProtoMajor != want {
				t.Errorf("offering %s got %s", protocol, response.Proto)
			}
		}
	})

	t.Run("no route and upstream down", func(t *testing.T) {
		if status, _ := getSeen(t, client, "https://down.example.com/"); status != http.StatusBadGateway {
			t.Errorf("upstream down: %d, want 502", status)
		}
		if status, _ := getSeen(t, clientTo(running.httpsAddress), "https://no-route.test/"); status != http.StatusNotFound {
			t.Errorf("no route: %d, want 404", status)
		}
	})

	t.Run("WebSocket-style upgrade", func(t *testing.T) {
		conn, err := tls.Dial("tcp", running.httpsAddress, &tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: a.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		reader := bufio.NewReader(conn)
		response, err := http.ReadResponse(reader, nil)
		if err != nil {
			t.Fatal(err)
		}
		if response.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %d", response.StatusCode)
		}
		fmt.Fprint(conn, "ping")
		echoed := make([]byte, 4)
		if _, err := io.ReadFull(reader, echoed); err != nil || string(echoed) != "ping" {
			t.Fatalf("echo: %q, %v", echoed, err)
		}
	})

	t.Run("routes reload", func(t *testing.T) {
		if err := routes.Load(routeFile("- {host: '*', upstream: " + api.URL + "}")); err != nil {
			t.Fatal(err)
		}
		if _, got := getSeen(t, client, "https://a.example.com/x"); got.Upstream != "api" {
			t.Errorf("after reload got %q, want api", got.Upstream)
		}
		if err := routes.Load([]byte("routes: [{host: x, upstream: 'not a url'}]")); err == nil {
			t.Error("a bad route file loaded")
		}
		if _, got := getSeen(t, client, "https://a.example.com/x"); got.Upstream != "api" {
			t.Errorf("a bad file changed the routes: got %q", got.Upstream)
		}
	})

	t.Run("port 80 redirects, except http-01", func(t *testing.T) {
		plain := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		request, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+running.httpAddress+"/a/b?c=d", nil)
		request.Host = "www.example.com:80"
		response, err := plain.Do(request)
		if err != nil {
			t.Fatal(err)
		}
		response.Body.Close()
		if response.StatusCode != http.StatusPermanentRedirect || response.Header.Get("Location") != "https://www.example.com/a/b?c=d" {
			t.Errorf("got %d to %q", response.StatusCode, response.Header.Get("Location"))
		}
		response, err = plain.Get("http://" + running.httpAddress + edge.HTTP01PathPrefix + "unknown")
		if err != nil {
			t.Fatal(err)
		}
		response.Body.Close()
		if response.StatusCode != http.StatusNotFound {
			t.Errorf("unknown http-01 token: %d, want 404 (never a redirect)", response.StatusCode)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		status, body, err := get(ctx, &http.Client{Timeout: 5 * time.Second}, "http://"+running.healthAddress+"/metrics")
		if err != nil || status != http.StatusOK {
			t.Fatalf("metrics: %d, %v", status, err)
		}
		for _, want := range []string{
			`certpilot_edge_tls_handshakes_total{result="ok"}`,
			`certpilot_edge_connections_total{listener="https"}`,
			`certpilot_edge_upstream_duration_seconds_count{mode="terminate"}`,
			`certpilot_edge_upstream_errors_total{mode="terminate"} 1`,
			`certpilot_edge_certificates 2`,
			`certpilot_edge_certificate_earliest_expiry_timestamp_seconds`,
			`certpilot_edge_config_reloads_total{result="failed"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// TestCertificateHotReload renews a certificate Secret while a client holds a keep-alive
// connection: new handshakes get the renewed certificate at once, and the open connection goes
// on working.
func TestCertificateHotReload(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := testContext(t)
	namespace := createNamespace(t, ctx, "edge-hot-reload")
	first := edgetest.SelfSignedCertificate(t, "www.example.com")
	edgetest.Issued(ctx, t, kube.Client, namespace, "www", first, "www.example.com")
	certificates := edge.NewCertificateStore()
	startCertificateSecretSource(t, ctx, namespace, certificates, nil)

	web := startEcho(t, "web")
	routes := edge.NewRoutes(edge.ModeTerminate)
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()
	routes.Expect() // as with a route file: not ready until loaded
	running := startServer(t, edge.Options{Challenges: challenges, Certificates: certificates, Routes: routes, Log: testr.New(t)})
	edgetest.Eventually(t, 10*time.Second, func() error {
		if err := running.server.Ready(); err == nil || !strings.Contains(err.Error(), "routes") {
			return fmt.Errorf("ready before the routes were loaded: %v", err)
		}
		return nil
	})
	if err := routes.Load(routeFile("- {host: '*', upstream: " + web.URL + "}")); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, 10*time.Second, func() error { return running.server.Ready() })

	conn, err := tls.Dial("tcp", running.httpsAddress, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !conn.ConnectionState().PeerCertificates[0].Equal(first.Leaf) {
		t.Fatal("the first handshake did not get the Secret's certificate")
	}
	reader := bufio.NewReader(conn)
	request := func() error {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"); err != nil {
			return err
		}
		response, err := http.ReadResponse(reader, nil)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, response.Body)
		response.Body.Close()
		if response.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", response.StatusCode)
		}
		return nil
	}
	if err := request(); err != nil {
		t.Fatal(err)
	}

	renewed := edgetest.CertificateValid(t, time.Now().Add(-time.Minute), time.Now().Add(48*time.Hour), "www.example.com")
	edgetest.Issued(ctx, t, kube.Client, namespace, "www", renewed)
	edgetest.Eventually(t, 10*time.Second, func() error {
		leaf, err := edgetest.ServedLeaf(ctx, running.httpsAddress, "www.example.com")
		if err != nil {
			return err
		}
		if !leaf.Equal(renewed.Leaf) {
			return errNotYet
		}
		return nil
	})
	if err := request(); err != nil {
		t.Fatalf("the connection opened before the renewal failed after it: %v", err)
	}
}

// TestChallengeOnlyForACME: in terminate mode a challenge certificate never reaches an ordinary
// client, and acme-tls/1 never gets an ordinary certificate.
func TestChallengeOnlyForACME(t *testing.T) {
	ctx := testContext(t)
	account := edgetest.NewAccount(t)
	challenges := edge.NewChallengeStore()
	if _, err := challenges.Replace(map[string][]byte{
		v1alpha1.TLSALPN01Key("a.example.com"): account.ChallengeCertificatePEM(t, "token-a", "a.example.com"),
	}); err != nil {
		t.Fatal(err)
	}
	ordinary := edgetest.SelfSignedCertificate(t, "a.example.com", "b.example.com")
	certificates := edge.NewCertificateStore()
	certificates.Replace("test", []*tls.Certificate{ordinary})
	running := startServer(t, edge.Options{Challenges: challenges, Certificates: certificates, Log: testr.New(t)})

	if err := edgetest.ValidateChallenge(ctx, running.httpsAddress, "a.example.com", account.KeyAuthorization(t, "token-a")); err != nil {
		t.Errorf("acme-tls/1: %v", err)
	}
	checkOpenSSLChallenge(t, running.httpsAddress, "a.example.com", account.KeyAuthorization(t, "token-a"))
	if leaf, err := edgetest.ServedLeaf(ctx, running.httpsAddress, "a.example.com"); err != nil || !leaf.Equal(ordinary.Leaf) {
		t.Errorf("ordinary handshake: %v, want the ordinary certificate", err)
	}
	if _, err := edgetest.Handshake(ctx, running.httpsAddress, "b.example.com", []string{acme.ALPNProto}, 0); err == nil {
		t.Error("acme-tls/1 for a name without a challenge succeeded (an ordinary certificate was served?)")
	}
}
