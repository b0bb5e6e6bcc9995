package edge_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// serveTCP accepts connections on a loopback port until the test ends, each handled by handle
// on its own goroutine and closed after it. It returns the address.
func serveTCP(tb testing.TB, handle func(net.Conn)) string {
	tb.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = listener.Close() })
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				handle(conn)
			}()
		}
	}()
	return listener.Addr().String()
}

// serveHandshakes accepts TLS connections on a loopback port with config, completes each
// handshake and closes the connection, until the test ends. It returns the address.
func serveHandshakes(t *testing.T, config *tls.Config) string {
	t.Helper()
	return serveTCP(t, func(conn net.Conn) {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_ = tls.Server(conn, config).Handshake()
	})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTLSConfig(t *testing.T) {
	account := edgetest.NewAccount(t)
	store := edge.NewChallengeStore()
	if _, err := store.Replace(map[string][]byte{
		v1alpha1.TLSALPN01Key("a.example.com"): account.ChallengeCertificatePEM(t, "token-a", "a.example.com"),
		v1alpha1.TLSALPN01Key("b.example.com"): account.ChallengeCertificatePEM(t, "token-b", "b.example.com"),
	}); err != nil {
		t.Fatal(err)
	}
	ordinary := edgetest.SelfSignedCertificate(t, "a.example.com", "*.example.com")
	certificates, err := edge.NewStaticCertificates([]*tls.Certificate{ordinary}, nil)
	if err != nil {
		t.Fatal(err)
	}
	withCertificates := serveHandshakes(t, edge.NewTLSConfig(store, certificates))
	withoutCertificates := serveHandshakes(t, edge.NewTLSConfig(store, nil))

	acmeOnly := []string{acme.ALPNProto}
	tests := map[string]struct {
		address    string
		serverName string
		nextProtos []string
		maxVersion uint16
		// wantChallenge is the DNS name and token whose challenge certificate must be served.
		wantChallenge, wantToken string
		// wantOrdinary says the ordinary certificate must be served.
		wantOrdinary bool
		// otherwise the handshake must fail.
	}{
		"acme-tls/1 gets the challenge certificate of its SNI": {
			address: withCertificates, serverName: "a.example.com", nextProtos: acmeOnly,
			wantChallenge: "a.example.com", wantToken: "token-a",
		},
		"acme-tls/1 over TLS 1.2": {
			address: withCertificates, serverName: "b.example.com", nextProtos: acmeOnly, maxVersion: tls.VersionTLS12,
			wantChallenge: "b.example.com", wantToken: "token-b",
		},
		"acme-tls/1 without ordinary certificates": {
			address: withoutCertificates, serverName: "a.example.com", nextProtos: acmeOnly,
			wantChallenge: "a.example.com", wantToken: "token-a",
		},
		"acme-tls/1 with unknown SNI fails, even with a wildcard ordinary certificate": {
			address: withCertificates, serverName: "unknown.example.com", nextProtos: acmeOnly,
		},
		"acme-tls/1 without SNI fails": {
			address: withCertificates, serverName: "", nextProtos: acmeOnly,
		},
		"no ALPN gets the ordinary certificate for a name with a challenge": {
			address: withCertificates, serverName: "a.example.com", wantOrdinary: true,
		},
		"h2 and http/1.1 get the ordinary certificate": {
			address: withCertificates, serverName: "a.example.com", nextProtos: []string{"h2", "http/1.1"}, wantOrdinary: true,
		},
		"wildcard ordinary certificate for another name": {
			address: withCertificates, serverName: "www.example.com", wantOrdinary: true,
		},
		"no ALPN and no ordinary certificate fails, never a challenge certificate": {
			address: withoutCertificates, serverName: "a.example.com",
		},
		"no ALPN and an unknown name fails": {
			address: withCertificates, serverName: "example.org",
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			state, err := edgetest.Handshake(testContext(t), test.address, test.serverName, test.nextProtos, test.maxVersion)
			switch {
			case test.wantChallenge != "":
				if err != nil {
					t.Fatalf("handshake failed: %v", err)
				}
				keyAuthorization := account.KeyAuthorization(t, test.wantToken)
				if err := edgetest.CheckChallengeState(state, test.wantChallenge, keyAuthorization); err != nil {
					t.Fatal(err)
				}
				// Go's client offers X25519MLKEM768 first: a validation takes plain X25519.
				if state.CurveID != tls.X25519 {
					t.Errorf("validation handshake used key exchange %v, want X25519", state.CurveID)
				}
			case test.wantOrdinary:
				if err != nil {
					t.Fatalf("handshake failed: %v", err)
				}
				leaf := state.PeerCertificates[0]
				if _, _, ok := edgetest.ACMEIdentifier(leaf); ok {
					t.Fatal("ordinary handshake got a challenge certificate")
				}
				if !leaf.Equal(ordinary.Leaf) {
					t.Fatalf("served %v, want the ordinary certificate", leaf.DNSNames)
				}
				if state.NegotiatedProtocol == acme.ALPNProto {
					t.Fatal("ordinary handshake negotiated acme-tls/1")
				}
				if state.CurveID != tls.X25519MLKEM768 {
					t.Errorf("ordinary handshake used key exchange %v, want Go's default X25519MLKEM768", state.CurveID)
				}
			default:
				if err == nil {
					t.Fatalf("handshake succeeded with %v (acmeIdentifier: %v), want failure",
						state.PeerCertificates[0].DNSNames, hasACMEIdentifier(state))
				}
			}
		})
	}
}

func hasACMEIdentifier(state tls.ConnectionState) bool {
	_, _, ok := edgetest.ACMEIdentifier(state.PeerCertificates[0])
	return ok
}

func TestStaticCertificates(t *testing.T) {
	exact := edgetest.SelfSignedCertificate(t, "www.example.com")
	wildcard := edgetest.SelfSignedCertificate(t, "*.example.com")
	apex := edgetest.SelfSignedCertificate(t, "example.com", "EXAMPLE.net")
	fallback := edgetest.SelfSignedCertificate(t, "default.invalid")
	withDefault, err := edge.NewStaticCertificates([]*tls.Certificate{wildcard, exact, apex}, fallback)
	if err != nil {
		t.Fatal(err)
	}
	withoutDefault, err := edge.NewStaticCertificates([]*tls.Certificate{wildcard, exact, apex}, nil)
	if err != nil {
		t.Fatal(err)
	}
	onlyWildcard, err := edge.NewStaticCertificates([]*tls.Certificate{wildcard}, nil)
	if err != nil {
		t.Fatal(err)
	}

	tests := map[string]struct {
		source     *edge.StaticCertificates
		serverName string
		want       *tls.Certificate // nil: an error
	}{
		"exact name wins over wildcard": {withDefault, "www.example.com", exact},
		"exact name, other case":        {withDefault, "WWW.Example.com", exact},
		"trailing dot":                  {withDefault, "www.example.com.", exact},
		"wildcard covers one label":     {withDefault, "api.example.com", wildcard},
		"wildcard does not cover apex":  {onlyWildcard, "example.com", nil},
		"apex by exact name":            {withDefault, "example.com", apex},
		"second name, lower-cased":      {withDefault, "example.net", apex},
		"wildcard not two labels deep":  {withoutDefault, "a.b.example.com", nil},
		"deeper name gets the default":  {withDefault, "a.b.example.com", fallback},
		"unknown name gets the default": {withDefault, "example.org", fallback},
		"no SNI gets the default":       {withDefault, "", fallback},
		"unknown name without default":  {withoutDefault, "example.org", nil},
		"no SNI without default":        {withoutDefault, "", nil},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := test.source.GetCertificate(&tls.ClientHelloInfo{ServerName: test.serverName})
			if test.want == nil {
				if err == nil {
					t.Fatalf("got %v, want an error", got.Leaf.DNSNames)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != test.want {
				t.Fatalf("got %v, want %v", got.Leaf.DNSNames, test.want.Leaf.DNSNames)
			}
		})
	}

	if _, err := edge.NewStaticCertificates([]*tls.Certificate{{}}, nil); err == nil {
		t.Error("NewStaticCertificates accepted a certificate without data")
	}
}
