package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
)

func TestTLSALPN01Certificate(t *testing.T) {
	now := time.Now()
	for _, name := range []string{"www.example.com", "192.0.2.1", "2001:db8::1"} {
		t.Run(name, func(t *testing.T) {
			encoded, err := pki.TLSALPN01Certificate(name, "token.thumbprint", now)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := pki.ParseLeaf(encoded)
			if err != nil {
				t.Fatal(err)
			}
			if err := acme.VerifyTLSALPN01Certificate(cert, name, "token.thumbprint"); err != nil {
				t.Errorf("the validator's check fails: %v", err)
			}
			if err := acme.VerifyTLSALPN01Certificate(cert, name, "other.thumbprint"); err == nil {
				t.Error("a certificate for another key authorization passed the check")
			}
			if err := acme.VerifyTLSALPN01Certificate(cert, "192.0.2.2", "token.thumbprint"); err == nil {
				t.Error("a certificate for another name passed the check")
			}
			if _, ok := pki.ParseIP(name); ok {
				// RFC 8738 section 6: the IP address as the only iPAddress name, no DNS name.
				if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP(name)) {
					t.Errorf("names %v %v, want only the iPAddress %s", cert.DNSNames, cert.IPAddresses, name)
				}
			} else if !slices.Equal(cert.DNSNames, []string{name}) || len(cert.IPAddresses) != 0 {
				t.Errorf("names %v %v, want only %s", cert.DNSNames, cert.IPAddresses, name)
			}
			if _, err := pki.DecodePrivateKey(encoded); err != nil {
				t.Errorf("the key is not in the response: %v", err)
			}
			if !cert.NotAfter.After(now) || cert.NotAfter.After(now.Add(pki.TLSALPN01Validity)) {
				t.Errorf("notAfter %v, want within %v of %v", cert.NotAfter, pki.TLSALPN01Validity, now)
			}
		})
	}
	for _, bad := range [][2]string{{"*.example.com", "k"}, {"", "k"}, {"www.example.com", ""}} {
		if _, err := pki.TLSALPN01Certificate(bad[0], bad[1], now); err == nil {
			t.Errorf("TLSALPN01Certificate(%q, %q) succeeded", bad[0], bad[1])
		}
	}
}

// TestReverseName checks the reverse-DNS names against miekg/dns, a second implementation, and
// that IPFromReverseName inverts them.
func TestReverseName(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "192.0.2.1", "0.0.0.0", "255.255.255.255", "::1", "2001:db8::abcd:1", "fe80::1:2:3:4"} {
		addr := netip.MustParseAddr(ip)
		want, err := dns.ReverseAddr(ip)
		if err != nil {
			t.Fatal(err)
		}
		got := pki.ReverseName(addr)
		if got+"." != want {
			t.Errorf("ReverseName(%s) = %q, want %q", ip, got, want)
		}
		if pki.TLSALPN01ServerName(ip) != got {
			t.Errorf("TLSALPN01ServerName(%s) = %q, want %q", ip, pki.TLSALPN01ServerName(ip), got)
		}
		for _, name := range []string{got, want, "X" + got[1:]} {
			if back, ok := pki.IPFromReverseName(name); !ok || back != addr {
				if name[0] == 'X' {
					continue // not a nibble or an octet: must not parse
				}
				t.Errorf("IPFromReverseName(%q) = %v, %v, want %v", name, back, ok, addr)
			}
		}
	}
	if pki.TLSALPN01ServerName("www.example.com") != "www.example.com" {
		t.Error("a DNS name's server name is not the name itself")
	}
	for _, name := range []string{"www.example.com", "in-addr.arpa", "1.0.0.127.in-addr.arpa.example", "01.0.0.127.in-addr.arpa",
		"1.0.0.0.127.in-addr.arpa", "256.0.0.127.in-addr.arpa", "1.0.ip6.arpa", "10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
		"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"} {
		if addr, ok := pki.IPFromReverseName(name); ok {
			t.Errorf("IPFromReverseName(%q) = %v, want none", name, addr)
		}
	}
}

func TestCreateCSRWithIPAddresses(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		names      []string
		commonName string
		dnsNames   []string
		ips        []string
	}{
		"names and addresses": {names: []string{"www.example.com", "192.0.2.1", "2001:db8::1"}, commonName: "www.example.com",
			dnsNames: []string{"www.example.com"}, ips: []string{"192.0.2.1", "2001:db8::1"}},
		"address first": {names: []string{"192.0.2.1", "www.example.com"}, commonName: "www.example.com",
			dnsNames: []string{"www.example.com"}, ips: []string{"192.0.2.1"}},
		"addresses only": {names: []string{"127.0.0.1", "::1"}, ips: []string{"127.0.0.1", "::1"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			der, err := pki.CreateCSR(key, tc.names)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if csr.Subject.CommonName != tc.commonName {
				t.Errorf("CommonName %q, want %q (never an IP address)", csr.Subject.CommonName, tc.commonName)
			}
			if !slices.Equal(csr.DNSNames, tc.dnsNames) {
				t.Errorf("DNS names %v, want %v", csr.DNSNames, tc.dnsNames)
			}
			var ips []string
			for _, ip := range csr.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.ips) {
				t.Errorf("IP addresses %v, want %v", ips, tc.ips)
			}
		})
	}
}

func TestNamesEqual(t *testing.T) {
	leaf := &x509.Certificate{DNSNames: []string{"www.example.com"}, IPAddresses: []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")}}
	tests := []struct {
		names []string
		want  bool
	}{
		{[]string{"2001:db8::1", "www.example.com", "192.0.2.1"}, true},
		{[]string{"WWW.example.com", "192.0.2.1", "2001:db8:0::1"}, true},
		{[]string{"www.example.com", "192.0.2.1"}, false},
		{[]string{"www.example.com", "192.0.2.1", "2001:db8::1", "192.0.2.2"}, false},
		{[]string{"www.example.com", "192.0.2.1", "2001:db8::2"}, false},
	}
	for _, tc := range tests {
		if got := pki.NamesEqual(leaf, tc.names); got != tc.want {
			t.Errorf("NamesEqual(%v) = %v, want %v", tc.names, got, tc.want)
		}
	}
	if got := pki.LeafNames(leaf); !slices.Equal(got, []string{"www.example.com", "192.0.2.1", "2001:db8::1"}) {
		t.Errorf("LeafNames = %v", got)
	}
}
