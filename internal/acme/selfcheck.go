package acme

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/certpilot/certpilot/internal/netguard"
	"github.com/certpilot/certpilot/internal/pki"
)

// ALPNProtocol is the ALPN protocol of tls-alpn-01 (RFC 8737 section 6.2).
const ALPNProtocol = "acme-tls/1"

// idPeAcmeIdentifier is the acmeIdentifier certificate extension (RFC 8737 section 6.1).
var idPeAcmeIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// VerifyTLSALPN01Certificate checks cert the way the CA's validator will: its only name is
// domain (a DNS name, or an IP address as its only iPAddress name, RFC 8738) and its critical
// acmeIdentifier extension holds the SHA-256 of keyAuthorization.
func VerifyTLSALPN01Certificate(cert *x509.Certificate, domain, keyAuthorization string) error {
	if addr, ok := pki.ParseIP(domain); ok {
		if len(cert.IPAddresses) != 1 || !net.IP(addr.AsSlice()).Equal(cert.IPAddresses[0]) || len(cert.DNSNames) != 0 {
			return fmt.Errorf("the challenge certificate names %v %v, want only the IP address %s", cert.DNSNames, cert.IPAddresses, domain)
		}
	} else if len(cert.DNSNames) != 1 || cert.DNSNames[0] != domain || len(cert.IPAddresses) != 0 {
		return fmt.Errorf("the challenge certificate names %v %v, want only %q", cert.DNSNames, cert.IPAddresses, domain)
	}
	want := sha256.Sum256([]byte(keyAuthorization))
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(idPeAcmeIdentifier) {
			continue
		}
		if !ext.Critical {
			return errors.New("the challenge certificate's acmeIdentifier extension is not critical")
		}
		var got []byte
		if rest, err := asn1.Unmarshal(ext.Value, &got); err != nil || len(rest) != 0 {
			return errors.New("the challenge certificate's acmeIdentifier extension is malformed")
		}
		if !bytes.Equal(got, want[:]) {
			return errors.New("the challenge certificate answers another challenge (acmeIdentifier differs): an old response is still served")
		}
		return nil
	}
	return errors.New("the served certificate has no acmeIdentifier extension: an ordinary certificate was served instead of the challenge certificate")
}

// CheckTLSALPN01 dials address as the CA's validator would for domain (SNI domain, or for an IP
// address its reverse-DNS name as RFC 8738 says; ALPN acme-tls/1) and verifies the served
// challenge certificate, so that a challenge is accepted only when it will pass: failed
// validations count against the CA's rate limits. The dial obeys the netguard policy ctx
// carries (netguard.WithPolicy), if any; so does CheckHTTP01's: an IP address is dialled only
// where a name resolving to it would be.
func CheckTLSALPN01(ctx context.Context, address, domain, keyAuthorization string) error {
	dialer := &tls.Dialer{
		NetDialer: netguard.DialerFrom(ctx, net.Dialer{Timeout: 10 * time.Second}),
		Config: &tls.Config{
			ServerName: pki.TLSALPN01ServerName(domain),
			NextProtos: []string{ALPNProtocol},
			// The challenge certificate is self-signed by design; it is checked below.
			InsecureSkipVerify: true, //nolint:gosec
			MinVersion:         tls.VersionTLS12,
			// What is checked is the certificate served, not the key exchange: X25519 alone
			// spares both sides the post-quantum hybrid's work on every self-check.
			CurvePreferences: []tls.CurveID{tls.X25519},
		},
	}
	conn, err := dialer.DialContext(ctx, "tcp", address)
	if err != nil {
		return fmt.Errorf("tls-alpn-01 self-check of %s at %s: %w", domain, address, err)
	}
	defer conn.Close()
	state := conn.(*tls.Conn).ConnectionState()
	if state.NegotiatedProtocol != ALPNProtocol {
		return fmt.Errorf("tls-alpn-01 self-check of %s at %s: the server did not negotiate ALPN %q (it negotiated %q)",
			domain, address, ALPNProtocol, state.NegotiatedProtocol)
	}
	if len(state.PeerCertificates) == 0 {
		return fmt.Errorf("tls-alpn-01 self-check of %s at %s: no certificate served", domain, address)
	}
	if err := VerifyTLSALPN01Certificate(state.PeerCertificates[0], domain, keyAuthorization); err != nil {
		return fmt.Errorf("tls-alpn-01 self-check of %s at %s: %w", domain, address, err)
	}
	return nil
}

// CheckHTTP01 fetches http://<address>/.well-known/acme-challenge/<token> with Host domain (an
// IPv6 address in brackets), as the CA's validator will, and compares the body with
// keyAuthorization. Redirects are not
// followed: a load balancer that redirects the token to HTTPS must answer there instead, which
// this check cannot vouch for.
func CheckHTTP01(ctx context.Context, address, domain, token, keyAuthorization string) error {
	url := "http://" + address + "/.well-known/acme-challenge/" + token
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	request.Host = domain
	if addr, ok := pki.ParseIP(domain); ok && addr.Is6() {
		request.Host = "[" + addr.String() + "]"
	}
	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		// A new connection per check, straight to address (never through a proxy), obeying the
		// dial policy ctx carries.
		Transport: &http.Transport{
			DialContext:       netguard.DialerFrom(ctx, net.Dialer{Timeout: 10 * time.Second}).DialContext,
			DisableKeepAlives: true,
		},
	}
	response, err := client.Do(request)
	if err != nil {
		return fmt.Errorf("http-01 self-check of %s at %s: %w", domain, address, err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(io.LimitReader(response.Body, 4096))
	if err != nil {
		return fmt.Errorf("http-01 self-check of %s at %s: %w", domain, address, err)
	}
	if response.StatusCode != http.StatusOK {
		// The code alone: the reason phrase is the server's own text.
		return fmt.Errorf("http-01 self-check of %s at %s: GET /.well-known/acme-challenge/%s answered %d %s",
			domain, address, token, response.StatusCode, http.StatusText(response.StatusCode))
	}
	if strings.TrimSpace(string(body)) != keyAuthorization {
		return fmt.Errorf("http-01 self-check of %s at %s: the served key authorization differs (an old response is still served)", domain, address)
	}
	return nil
}
