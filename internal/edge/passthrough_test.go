package edge_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/crypto/acme"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// startTLSUpstream starts a plain TLS server (an ingress controller stand-in) serving HTTP:
// it answers with the client address it sees. With proxyProtocol it expects a PROXY header.
func startTLSUpstream(t *testing.T, certificate *tls.Certificate, proxyProtocol bool) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if proxyProtocol {
		listener = &proxyproto.Listener{Listener: listener, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			return proxyproto.REQUIRE, nil
		}}
	}
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.RemoteAddr)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*certificate}},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = server.ServeTLS(listener, "", "") }()
	t.Cleanup(func() { _ = server.Close() })
	return listener.Addr().String()
}

func TestPassthrough(t *testing.T) {
	ctx := testContext(t)
	upstreamCertificate := edgetest.SelfSignedCertificate(t, "*.example.com", "example.com")
	plain := startTLSUpstream(t, upstreamCertificate, false)
	withProxyProtocol := startTLSUpstream(t, upstreamCertificate, true)

	account := edgetest.NewAccount(t)
	challenges := edge.NewChallengeStore()
	if _, err := challenges.Replace(map[string][]byte{
		v1alpha1.TLSALPN01Key("a.example.com"): account.ChallengeCertificatePEM(t, "token-a", "a.example.com"),
	}); err != nil {
		t.Fatal(err)
	}
	routes := edge.NewRoutes(edge.ModePassthrough)
	if err := routes.Load(routeFile(
		"- {host: '*.example.com', upstream: '"+plain+"'}",
		"- {host: proxied.example.com, upstream: '"+withProxyProtocol+"', proxyProtocol: true}",
	)); err != nil {
		t.Fatal(err)
	}
	running := startServer(t, edge.Options{Mode: edge.ModePassthrough, Challenges: challenges, Routes: routes, Log: testr.New(t)})

	t.Run("ordinary clients reach the upstream unchanged", func(t *testing.T) {
		for _, protocol := range []string{"h2", "http/1.1"} {
			client := clientTo(running.httpsAddress, protocol)
			var state tls.ConnectionState
			client.Transport.(*http.Transport).TLSClientConfig.VerifyConnection = func(s tls.ConnectionState) error {
				state = s
				return nil
			}
			response, err := client.Get("https://a.example.com/")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, response.Body)
			response.Body.Close()
			client.CloseIdleConnections()
			// The client finished a handshake with the upstream's key: every byte passed
			// through unchanged, both ways.
			if !state.PeerCertificates[0].Equal(upstreamCertificate.Leaf) {
				t.Errorf("%s: the client saw %v, want the upstream's certificate", protocol, state.PeerCertificates[0].DNSNames)
			}
			if (state.NegotiatedProtocol == "h2") != (protocol == "h2") {
				t.Errorf("negotiated %q with the upstream, offering %q", state.NegotiatedProtocol, protocol)
			}
		}
	})

	t.Run("acme-tls/1 is answered locally", func(t *testing.T) {
		if err := edgetest.ValidateChallenge(ctx, running.httpsAddress, "a.example.com", account.KeyAuthorization(t, "token-a")); err != nil {
			t.Fatal(err)
		}
		checkOpenSSLChallenge(t, running.httpsAddress, "a.example.com", account.KeyAuthorization(t, "token-a"))
		// Never passed through, even when the upstream would answer for the name.
		if _, err := edgetest.Handshake(ctx, running.httpsAddress, "b.example.com", []string{acme.ALPNProto}, 0); err == nil {
			t.Error("acme-tls/1 without a challenge succeeded: passed through to the upstream?")
		}
	})

	t.Run("PROXY protocol v2 keeps the client address", func(t *testing.T) {
		conn, err := tls.Dial("tcp", running.httpsAddress, &tls.Config{ServerName: "proxied.example.com", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: proxied.example.com\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		response, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(response.Body)
		response.Body.Close()
		// Without the header the upstream would see the edge's own connection.
		if string(body) != conn.LocalAddr().String() {
			t.Errorf("upstream saw client %q, want %q", body, conn.LocalAddr())
		}
	})

	t.Run("no route closes the connection", func(t *testing.T) {
		if _, err := edgetest.Handshake(ctx, running.httpsAddress, "other.test", nil, 0); err == nil {
			t.Error("handshake for a name without a route succeeded")
		}
	})

	t.Run("metrics", func(t *testing.T) {
		status, body, err := getURL(ctx, "http://"+running.healthAddress+"/metrics")
		if err != nil || status != http.StatusOK {
			t.Fatalf("metrics: %d, %v", status, err)
		}
		for _, want := range []string{
			`certpilot_edge_tls_handshakes_total{result="passthrough"}`,
			`certpilot_edge_tls_handshakes_total{result="acme-tls/1"}`,
			`certpilot_edge_acme_answers_total{challenge="tls-alpn-01",result="answered"}`,
			`certpilot_edge_acme_answers_total{challenge="tls-alpn-01",result="not_found"}`,
			`certpilot_edge_upstream_duration_seconds_count{mode="passthrough"}`,
		} {
			if !containsLine(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// TestPassthroughHalfClose: a half-close passes through in either direction while the other
// direction carries on until its own end.
func TestPassthroughHalfClose(t *testing.T) {
	hello := recordClientHello(t, &tls.Config{ServerName: "h.example.com"})
	// After the hello, the upstream reads one byte. 'c': it reads until the client's end, then
	// answers with what it read and closes. 'u': it sends "greeting" and half-closes first,
	// then reads until the client's end and reports what it read on upstreamRead.
	upstreamRead := make(chan string, 1)
	upstream := serveTCP(t, func(conn net.Conn) {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		head := make([]byte, len(hello)+1)
		if _, err := io.ReadFull(conn, head); err != nil {
			return
		}
		if head[len(hello)] == 'u' {
			_, _ = io.WriteString(conn, "greeting")
			_ = conn.(*net.TCPConn).CloseWrite()
		}
		rest, err := io.ReadAll(conn)
		if err != nil {
			rest = []byte(err.Error())
		}
		if head[len(hello)] == 'u' {
			upstreamRead <- string(rest)
			return
		}
		_, _ = conn.Write(append([]byte("read "), rest...))
	})
	routes := edge.NewRoutes(edge.ModePassthrough)
	if err := routes.Load(routeFile("- {host: h.example.com, upstream: '" + upstream + "'}")); err != nil {
		t.Fatal(err)
	}
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()
	running := startServer(t, edge.Options{Mode: edge.ModePassthrough, Challenges: challenges, Routes: routes, Log: testr.New(t)})
	dial := func(t *testing.T, mode byte) *net.TCPConn {
		conn, err := net.Dial("tcp", running.httpsAddress)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(append(append([]byte{}, hello...), mode)); err != nil {
			t.Fatal(err)
		}
		return conn.(*net.TCPConn)
	}

	t.Run("client ends first", func(t *testing.T) {
		conn := dial(t, 'c')
		if _, err := io.WriteString(conn, "request"); err != nil {
			t.Fatal(err)
		}
		_ = conn.CloseWrite()
		answer, err := io.ReadAll(conn)
		if err != nil || string(answer) != "read request" {
			t.Errorf("client read %q, %v; want the upstream's answer after the client's end", answer, err)
		}
	})

	t.Run("upstream ends first", func(t *testing.T) {
		conn := dial(t, 'u')
		greeting, err := io.ReadAll(conn)
		if err != nil || string(greeting) != "greeting" {
			t.Fatalf("client read %q, %v; want the upstream's greeting and its end", greeting, err)
		}
		if _, err := io.WriteString(conn, "late request"); err != nil {
			t.Fatal(err)
		}
		_ = conn.CloseWrite()
		select {
		case read := <-upstreamRead:
			if read != "late request" {
				t.Errorf("upstream read %q, want %q", read, "late request")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream never saw the client's end")
		}
	})
}
