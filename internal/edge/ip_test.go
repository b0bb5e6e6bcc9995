package edge_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/pki"
)

// TestIPAddressChallenges serves tls-alpn-01 challenge certificates for IP addresses (RFC 8738)
// from contract entries keyed by their reverse-DNS names, and checks them with the manager's own
// self-check (which sends the reverse-DNS name as SNI, as a validator does) over IPv4 and IPv6
// loopback; an ordinary handshake without SNI gets the certificate issued for the IP address the
// connection arrived at.
func TestIPAddressChallenges(t *testing.T) {
	now := time.Now()
	data := map[string][]byte{}
	for _, ip := range []string{"127.0.0.1", "::1"} {
		challenge, err := pki.TLSALPN01Certificate(ip, "token-"+ip+".thumbprint", now)
		if err != nil {
			t.Fatal(err)
		}
		data[v1alpha1.TLSALPN01Key(pki.TLSALPN01ServerName(ip))] = challenge
	}
	challenges := edge.NewChallengeStore()
	if _, err := challenges.Replace(data); err != nil {
		t.Fatalf("the store refused the IP address entries: %v", err)
	}
	issuedV4, issuedV6 := edgetest.SelfSignedCertificate(t, "127.0.0.1"), edgetest.SelfSignedCertificate(t, "::1")
	fallback := edgetest.SelfSignedCertificate(t, "default.example.com")
	certificates, err := edge.NewStaticCertificates([]*tls.Certificate{issuedV4, issuedV6}, fallback)
	if err != nil {
		t.Fatal(err)
	}
	config := edge.NewTLSConfig(challenges, certificates)
	// A client that sends an IP address as SNI (RFC 6066 forbids it, some do) gets its
	// certificate too, the address in any form.
	if got, err := certificates.GetCertificate(&tls.ClientHelloInfo{ServerName: "0:0::1"}); err != nil || got != issuedV6 {
		t.Errorf("SNI 0:0::1 got %v (%v), want the certificate for ::1", got, err)
	}

	for ip, issued := range map[string]*tls.Certificate{"127.0.0.1": issuedV4, "::1": issuedV6} {
		t.Run(ip, func(t *testing.T) {
			listener, err := tls.Listen("tcp", net.JoinHostPort(ip, "0"), config)
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
					go func() {
						_ = conn.(*tls.Conn).Handshake()
						conn.Close()
					}()
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			address := listener.Addr().String()
			if err := acme.CheckTLSALPN01(ctx, address, ip, "token-"+ip+".thumbprint"); err != nil {
				t.Errorf("self-check of %s: %v", ip, err)
			}
			if err := acme.CheckTLSALPN01(ctx, address, ip, "other.thumbprint"); err == nil {
				t.Errorf("self-check of %s passed with another key authorization", ip)
			}
			// An ordinary client of https://<ip>/ sends no SNI.
			state, err := edgetest.Handshake(ctx, address, "", nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := state.PeerCertificates[0]; !got.Equal(issued.Leaf) {
				t.Errorf("served %v %v without SNI, want the certificate for %s", got.DNSNames, got.IPAddresses, ip)
			}
		})
	}
}

// TestIPAddressChallengeEntries checks what the edge accepts under an IP address's key: only a
// challenge certificate naming that address.
func TestIPAddressChallengeEntries(t *testing.T) {
	now := time.Now()
	key := v1alpha1.TLSALPN01Key(pki.TLSALPN01ServerName("192.0.2.1"))
	if want := "tls-alpn-01.1.2.0.192.in-addr.arpa.pem"; key != want {
		t.Errorf("key %q, want %q", key, want)
	}
	for name, test := range map[string]struct {
		value     string
		wantError string
	}{
		"the address":         {value: "192.0.2.1"},
		"another address":     {value: "192.0.2.2", wantError: "certificate must name exactly the IP address 192.0.2.1"},
		"a DNS name":          {value: "www.example.com", wantError: "certificate must name exactly the IP address 192.0.2.1"},
		"the reverse as name": {value: "1.2.0.192.in-addr.arpa", wantError: "certificate must name exactly the IP address 192.0.2.1"},
	} {
		t.Run(name, func(t *testing.T) {
			var value []byte
			var err error
			if addr, ok := pki.ParseIP(test.value); ok {
				value, err = pki.TLSALPN01Certificate(addr.String(), "k.t", now)
			} else {
				// A DNS-name challenge certificate, as a confused writer would store.
				value, err = pki.TLSALPN01Certificate(test.value, "k.t", now)
			}
			if err != nil {
				t.Fatal(err)
			}
			store := edge.NewChallengeStore()
			_, err = store.Replace(map[string][]byte{key: value})
			_, served := store.ChallengeCertificate("1.2.0.192.IN-ADDR.ARPA.")
			switch {
			case test.wantError == "" && (err != nil || !served):
				t.Errorf("refused (%v), want served", err)
			case test.wantError != "" && (err == nil || !strings.Contains(err.Error(), test.wantError) || served):
				t.Errorf("error %v (served %v), want %q and not served", err, served, test.wantError)
			}
		})
	}
}
