package acme_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestIPAddressIssuance orders IPv4 and IPv6 loopback addresses as "ip" identifiers (RFC 8738)
// from Pebble and proves them by tls-alpn-01 (Pebble sends the reverse-DNS name as SNI and wants
// the address as the challenge certificate's only iPAddress name: pki.TLSALPN01Certificate) and
// by http-01. Each response is first checked with the manager's own self-checks. The issued
// certificates name the addresses as iPAddress names and have no subject common name.
func TestIPAddressIssuance(t *testing.T) {
	testenv.SkipIfShort(t)
	t.Parallel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	t.Cleanup(cancel)
	client := registeredClient(t, ctx, pebble)

	// Responders on both loopback addresses, on the ports Pebble's validator dials.
	var mu sync.Mutex
	challengeCerts := map[string]*tls.Certificate{} // by SNI
	bodies := map[string]string{}                   // by path
	for _, host := range []string{"127.0.0.1", "::1"} {
		serveACMETLS(t, host, pebble.TLSPort, func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			mu.Lock()
			defer mu.Unlock()
			return challengeCerts[hello.ServerName], nil
		})
		httpListener, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(pebble.HTTPPort)))
		if err != nil {
			t.Fatal(err)
		}
		server := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			body, ok := bodies[r.URL.Path]
			mu.Unlock()
			if !ok {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write([]byte(body))
		})}
		go func() { _ = server.Serve(httpListener) }()
		t.Cleanup(func() { server.Close() })
	}

	tlsALPN := solver{acme.ChallengeTLSALPN01, func(authz *acme.Authorization, challenge acme.Challenge) error {
		keyAuthorization, err := client.KeyAuthorization(challenge.Token)
		if err != nil {
			return err
		}
		encoded, err := pki.TLSALPN01Certificate(authz.Name(), keyAuthorization, time.Now())
		if err != nil {
			return err
		}
		cert, err := tls.X509KeyPair(encoded, encoded)
		if err != nil {
			return err
		}
		mu.Lock()
		challengeCerts[pki.TLSALPN01ServerName(authz.Name())] = &cert
		mu.Unlock()
		return acme.CheckTLSALPN01(ctx, net.JoinHostPort(authz.Name(), strconv.Itoa(pebble.TLSPort)), authz.Name(), keyAuthorization)
	}}
	http01 := solver{acme.ChallengeHTTP01, func(authz *acme.Authorization, challenge acme.Challenge) error {
		path, body, err := client.HTTP01Response(challenge.Token)
		if err != nil {
			return err
		}
		mu.Lock()
		bodies[path] = body
		mu.Unlock()
		return acme.CheckHTTP01(ctx, net.JoinHostPort(authz.Name(), strconv.Itoa(pebble.HTTPPort)), authz.Name(), challenge.Token, body)
	}}

	for name, tc := range map[string]struct {
		names []string
		solve solver
	}{
		"tls-alpn-01 IPv4": {[]string{"127.0.0.1"}, tlsALPN},
		"tls-alpn-01 IPv6": {[]string{"::1"}, tlsALPN},
		"http-01 both":     {[]string{"127.0.0.1", "::1"}, http01},
	} {
		t.Run(name, func(t *testing.T) {
			// Not parallel: both tls-alpn-01 cases would publish for the same SNI map, and
			// Pebble may reuse an authorization of the other case.
			order, err := client.NewOrder(ctx, tc.names, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, url := range order.AuthzURLs {
				authz, err := client.GetAuthorization(ctx, url)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Contains(tc.names, authz.Name()) {
					t.Errorf("authorization for %q, want one of %v", authz.Name(), tc.names)
				}
				var offered []string
				for _, c := range authz.Challenges {
					offered = append(offered, c.Type)
				}
				if slices.Contains(offered, acme.ChallengeDNS01) {
					t.Errorf("the CA offers dns-01 for IP address %s: %v", authz.Name(), offered)
				}
			}
			chain, _ := issue(t, ctx, client, tc.names, "", tc.solve)
			leaf, err := x509.ParseCertificate(chain[0])
			if err != nil {
				t.Fatal(err)
			}
			if !pki.NamesEqual(leaf, tc.names) || len(leaf.DNSNames) != 0 {
				t.Errorf("leaf names %v %v, want the IP addresses %v only", leaf.DNSNames, leaf.IPAddresses, tc.names)
			}
			if leaf.Subject.CommonName != "" {
				t.Errorf("leaf common name %q, want none for IP addresses", leaf.Subject.CommonName)
			}
		})
	}
}
