package main_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestEdgeBinaryWithoutKubernetes runs the edge from files only: certificates from SSL_CERTS
// and a mounted directory, challenges from a directory, routes from a file that is rewritten
// while it runs.
func TestEdgeBinaryWithoutKubernetes(t *testing.T) {
	testenv.SkipIfShort(t) // builds the binary
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	binary := buildEdge(t)

	upstream := func(name string) *httptest.Server {
		server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = fmt.Fprintf(w, "%s %s", name, r.Host)
		}))
		t.Cleanup(server.Close)
		return server
	}
	first, second := upstream("first"), upstream("second")

	fromEnvironment := edgetest.SelfSignedCertificate(t, "env.example.test")
	fromDir := edgetest.SelfSignedCertificate(t, "dir.example.test")
	certificateDir, challengeDir, configDir := t.TempDir(), t.TempDir(), t.TempDir()
	for name, content := range map[string][]byte{
		"tls.crt": edgetest.ChainPEM(fromDir), "tls.key": edgetest.KeyPEM(t, fromDir),
	} {
		if err := os.WriteFile(filepath.Join(certificateDir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	routesFile := filepath.Join(configDir, "routes.yaml")
	writeRoutes := func(upstreamURL string) {
		// Written beside and renamed over, as a ConfigMap volume swaps.
		temporary := routesFile + ".tmp"
		if err := os.WriteFile(temporary, fmt.Appendf(nil, "routes:\n- host: '*'\n  upstream: %s\n", upstreamURL), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(temporary, routesFile); err != nil {
			t.Fatal(err)
		}
	}
	writeRoutes(first.URL)

	httpsAddress, healthAddress := testenv.FreeAddress(t), testenv.FreeAddress(t)
	edgeProcess := startWithEnv(t, binary, []string{"SSL_CERTS=" + string(edgetest.CertificatePEM(t, fromEnvironment))},
		"--challenge-dir", challengeDir,
		"--certificate-dir", certificateDir,
		"--routes", routesFile,
		"--https-bind-address", httpsAddress,
		"--http-bind-address", testenv.FreeAddress(t),
		"--health-bind-address", healthAddress,
	)
	waitReady(t, edgeProcess, healthAddress)

	for name, want := range map[string]string{"env.example.test": "first env.example.test", "dir.example.test": "first dir.example.test"} {
		leaf, err := edgetest.ServedLeaf(ctx, httpsAddress, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if leaf.DNSNames[0] != name {
			t.Errorf("%s: served a certificate for %v", name, leaf.DNSNames)
		}
		if body := getInsecure(t, ctx, httpsAddress, name); body != want {
			t.Errorf("%s: %q, want %q", name, body, want)
		}
	}

	writeRoutes(second.URL)
	edgetest.Eventually(t, 10*time.Second, func() error {
		if body := getInsecure(t, ctx, httpsAddress, "env.example.test"); body != "second env.example.test" {
			return fmt.Errorf("got %q after the route file changed", body)
		}
		return nil
	})
	stopEdge(t, edgeProcess)
}

// getInsecure GETs https://name/ through address without verifying the certificate.
func getInsecure(t *testing.T, ctx context.Context, address, name string) string {
	t.Helper()
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+name+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	transport := insecureTransport(address)
	defer transport.CloseIdleConnections()
	response, err := (&http.Client{Timeout: 5 * time.Second, Transport: transport}).Do(request)
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(response.Body)
	return string(body)
}
