package edge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/acme"
)

// CertificateSource provides the certificates of ordinary (non-challenge) handshakes, chosen by
// the ClientHello (usually its SNI). Its GetCertificate has the signature of
// tls.Config.GetCertificate. It returns an error, or nil and nil, when it has no certificate for
// the hello; the handshake then fails.
type CertificateSource interface {
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// NewTLSConfig returns the edge's server TLS configuration.
//
// A ClientHello that offers ALPN "acme-tls/1" is a tls-alpn-01 validation (RFC 8737): it gets
// exactly the challenge certificate of its SNI from challenges, with "acme-tls/1" as the only
// protocol, and a failed handshake when there is none. It never gets an ordinary certificate:
// the validator must see the challenge or nothing.
//
// Every other ClientHello gets its certificate from certificates (nil: the handshake fails) and
// never a challenge certificate, so that a self-signed challenge certificate can never reach a
// browser.
func NewTLSConfig(challenges *ChallengeStore, certificates CertificateSource) *tls.Config {
	return newTLSConfig(challenges, certificates, nil, nil)
}

// newTLSConfig is NewTLSConfig with the ALPN protocols of ordinary connections (nil: none
// negotiated) and metrics (nil: none).
func newTLSConfig(challenges *ChallengeStore, certificates CertificateSource, nextProtos []string, metrics *Metrics) *tls.Config {
	challengeConfig := &tls.Config{
		MinVersion: tls.VersionTLS12, // RFC 8737, section 4
		NextProtos: []string{acme.ALPNProto},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			// GetConfigForClient routes only acme-tls/1 hellos here; checking again keeps the
			// "never to an ordinary handshake" promise local to the code that keeps it.
			if !offersACMETLS(hello) {
				return nil, errors.New("certpilot edge: challenge certificate requested without ALPN acme-tls/1")
			}
			certificate, ok := challenges.ChallengeCertificate(hello.ServerName)
			metrics.acmeAnswer(challengeTypeTLSALPN01, ok)
			if !ok {
				return nil, fmt.Errorf("certpilot edge: no tls-alpn-01 challenge certificate for server name %q", hello.ServerName)
			}
			return certificate, nil
		},
		// The validation handshake carries nothing secret (the challenge certificate is public
		// and no data follows), so it takes the cheapest key exchange the validator offers:
		// X25519, not the hybrid post-quantum X25519MLKEM768 a Go validator offers first, which
		// was a quarter of the edge's CPU during a burst of validations. P-256 for the rest.
		CurvePreferences: challengeCurves,
		// The validator never resumes, and a ticket issued under this configuration must not
		// resume an ordinary session later.
		SessionTicketsDisabled: true,
		VerifyConnection: func(tls.ConnectionState) error {
			metrics.handshake(handshakeACME)
			return nil
		},
	}

	ordinaryConfig := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Without NextProtos no protocol is negotiated, and HTTP/1.1 is spoken.
		NextProtos: nextProtos,
		VerifyConnection: func(tls.ConnectionState) error {
			metrics.handshake(handshakeOK)
			return nil
		},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if certificates == nil {
				return nil, fmt.Errorf("certpilot edge: no certificate configured for server name %q", hello.ServerName)
			}
			certificate, err := certificates.GetCertificate(hello)
			if err != nil {
				return nil, err
			}
			if certificate == nil {
				// Without this, crypto/tls would fall back to Config.Certificates, which is empty
				// here, and fail with a less helpful message.
				return nil, fmt.Errorf("certpilot edge: no certificate for server name %q", hello.ServerName)
			}
			return certificate, nil
		},
	}

	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if offersACMETLS(hello) {
				return challengeConfig, nil
			}
			return ordinaryConfig, nil
		},
	}
}

// challengeCurves are the key exchanges of tls-alpn-01 validation handshakes.
var challengeCurves = []tls.CurveID{tls.X25519, tls.CurveP256}

// offersACMETLS reports whether a ClientHello offers the tls-alpn-01 protocol. The validator
// offers only "acme-tls/1"; a client that offers it among others asked for the challenge too,
// and the challenge certificate is public anyway.
func offersACMETLS(hello *tls.ClientHelloInfo) bool {
	return slices.Contains(hello.SupportedProtos, acme.ALPNProto)
}
