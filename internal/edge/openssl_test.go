package edge_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// checkOpenSSLChallenge validates a tls-alpn-01 answer with `openssl s_client -alpn acme-tls/1`,
// a client that shares no code with the edge. It runs as a subtest of its own, so that on a
// machine without openssl that check alone is reported as skipped, with the reason, and the
// caller's other checks still run (`make test` installs openssl: hack/install-test-deps.sh).
func checkOpenSSLChallenge(t *testing.T, address, dnsName, keyAuthorization string) {
	t.Helper()
	t.Run("openssl-s_client", func(t *testing.T) {
		openssl, err := exec.LookPath("openssl")
		if err != nil {
			t.Skip("openssl is not installed, so the independent openssl s_client check did not run: make test-deps installs it")
		}
		checkWithOpenSSL(t, openssl, address, dnsName, keyAuthorization)
	})
}

func checkWithOpenSSL(t *testing.T, openssl, address, dnsName, keyAuthorization string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", address, "-servername", dnsName,
		"-alpn", "acme-tls/1", "-showcerts")
	cmd.Stdin = strings.NewReader("")
	output, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, output)
	}
	if !strings.Contains(string(output), "ALPN protocol: acme-tls/1") {
		t.Fatalf("openssl s_client did not negotiate acme-tls/1:\n%s", output)
	}
	block, _ := pem.Decode(output[strings.Index(string(output), "-----BEGIN CERTIFICATE-----"):])
	if block == nil {
		t.Fatalf("openssl s_client printed no certificate:\n%s", output)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// The ALPN protocol was checked above; the state carries the leaf and how many
	// certificates were sent.
	state := tls.ConnectionState{NegotiatedProtocol: "acme-tls/1", PeerCertificates: []*x509.Certificate{leaf}}
	for range strings.Count(string(output), "-----BEGIN CERTIFICATE-----") - 1 {
		state.PeerCertificates = append(state.PeerCertificates, leaf)
	}
	if err := edgetest.CheckChallengeState(state, dnsName, keyAuthorization); err != nil {
		t.Errorf("openssl s_client: %v", err)
	}
}
