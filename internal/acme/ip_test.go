package acme_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/netguard"
	"github.com/certpilot/certpilot/internal/pki"
)

func TestIdentifierType(t *testing.T) {
	for name, want := range map[string]string{
		"www.example.com": acme.IdentifierDNS, "*.example.com": acme.IdentifierDNS, "192.0.2.1": acme.IdentifierIP,
		"2001:db8::1": acme.IdentifierIP, "::1": acme.IdentifierIP, "1.2.3": acme.IdentifierDNS,
	} {
		if got := acme.IdentifierType(name); got != want {
			t.Errorf("IdentifierType(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestIPAddressSelfChecksObeyTheDialPolicy: the self-checks of an IP address dial it only where
// the dial policy of the issuer allows (netguard): a loopback address not granted is refused
// before any connection, a granted one is dialled, a link-local one never.
func TestIPAddressSelfChecksObeyTheDialPolicy(t *testing.T) {
	var connections atomic.Int64
	keyAuthorization := "token.thumbprint"
	encoded, err := pki.TLSALPN01Certificate("127.0.0.1", keyAuthorization, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	challenge, err := tls.X509KeyPair(encoded, encoded)
	if err != nil {
		t.Fatal(err)
	}
	listener, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		NextProtos: []string{acme.ALPNProtocol},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "1.0.0.127.in-addr.arpa" {
				t.Errorf("SNI %q, want the reverse-DNS name of 127.0.0.1", hello.ServerName)
			}
			return &challenge, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			connections.Add(1)
			go func() {
				defer conn.Close()
				_ = conn.(*tls.Conn).Handshake()
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, port, _ := net.SplitHostPort(listener.Addr().String())
	address := net.JoinHostPort("127.0.0.1", port)

	err = acme.CheckTLSALPN01(netguard.WithPolicy(ctx, netguard.Policy{}), address, "127.0.0.1", keyAuthorization)
	if !netguard.IsRefused(err) {
		t.Errorf("self-check of 127.0.0.1 without a grant: %v, want refused by the dial policy", err)
	}
	err = acme.CheckHTTP01(netguard.WithPolicy(ctx, netguard.Policy{}), address, "127.0.0.1", "token", keyAuthorization)
	if !netguard.IsRefused(err) {
		t.Errorf("http-01 self-check of 127.0.0.1 without a grant: %v, want refused by the dial policy", err)
	}
	if n := connections.Load(); n != 0 {
		t.Fatalf("%d connections without a grant, want 0", n)
	}
	loopback, err := netguard.ParseCIDRs("127.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	if err := acme.CheckTLSALPN01(netguard.WithPolicy(ctx, netguard.Policy{Allow: loopback}), address, "127.0.0.1", keyAuthorization); err != nil {
		t.Errorf("self-check of 127.0.0.1 with loopback granted: %v", err)
	}
	everything, err := netguard.ParseCIDRs("0.0.0.0/0")
	if err != nil {
		t.Fatal(err)
	}
	err = acme.CheckTLSALPN01(netguard.WithPolicy(ctx, netguard.Policy{Allow: everything}), "169.254.169.254:443", "169.254.169.254", keyAuthorization)
	if !netguard.IsRefused(err) || !strings.Contains(err.Error(), "never dials") {
		t.Errorf("self-check of the metadata address: %v, want never dialled", err)
	}
}
