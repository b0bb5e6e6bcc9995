package edge_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"golang.org/x/crypto/acme"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// runningServer is an edge Server on loopback ports.
type runningServer struct {
	server                    *edge.Server
	httpsAddress, httpAddress string
	healthAddress             string
	done                      chan error
}

// startServer serves opts on free loopback ports until the test ends.
func startServer(t *testing.T, opts edge.Options) *runningServer {
	t.Helper()
	listeners, err := edge.Listen("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	running := &runningServer{
		server:        edge.NewServer(opts),
		httpsAddress:  listeners.HTTPS.Addr().String(),
		httpAddress:   listeners.HTTP.Addr().String(),
		healthAddress: listeners.Health.Addr().String(),
		done:          make(chan error, 1),
	}
	go func() { running.done <- running.server.Serve(listeners) }()
	t.Cleanup(func() { running.shutdown(t) })
	return running
}

// shutdown stops the server (again, if the test did) and checks that Serve returned cleanly.
func (r *runningServer) shutdown(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.server.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-ctx.Done():
		t.Error("Serve did not return after Shutdown")
	}
}

func get(ctx context.Context, client *http.Client, url string) (int, string, error) {
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	response, err := client.Do(request)
	if err != nil {
		return 0, "", err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	return response.StatusCode, string(body), err
}

func TestServer(t *testing.T) {
	ctx := testContext(t)
	account := edgetest.NewAccount(t)
	store := edge.NewChallengeStore()
	ordinary := edgetest.SelfSignedCertificate(t, "a.example.com")
	certificates, err := edge.NewStaticCertificates(nil, ordinary)
	if err != nil {
		t.Fatal(err)
	}
	running := startServer(t, edge.Options{Challenges: store, Certificates: certificates, Log: testr.New(t)})
	client := &http.Client{Timeout: 5 * time.Second}

	// Not ready until the store has synced, even though the listeners serve.
	edgetest.Eventually(t, 5*time.Second, func() error {
		status, body, err := get(ctx, client, "http://"+running.healthAddress+"/readyz")
		if err != nil {
			return err
		}
		if status != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d %q before sync, want 503", status, body)
		}
		return nil
	})
	if status, _, err := get(ctx, client, "http://"+running.healthAddress+"/healthz"); err != nil || status != http.StatusOK {
		t.Fatalf("healthz: %d, %v", status, err)
	}

	if _, err := store.Replace(map[string][]byte{
		v1alpha1.TLSALPN01Key("a.example.com"): account.ChallengeCertificatePEM(t, "token-a", "a.example.com"),
		v1alpha1.HTTP01Key("token-h"):          []byte(account.KeyAuthorization(t, "token-h")),
	}); err != nil {
		t.Fatal(err)
	}
	if status, body, err := get(ctx, client, "http://"+running.healthAddress+"/readyz"); err != nil || status != http.StatusOK {
		t.Fatalf("readyz after sync: %d %q, %v", status, body, err)
	}

	t.Run("tls-alpn-01 handshake is the whole exchange", func(t *testing.T) {
		dialer := &tls.Dialer{Config: &tls.Config{
			ServerName: "a.example.com", NextProtos: []string{acme.ALPNProto}, InsecureSkipVerify: true,
		}}
		conn, err := dialer.DialContext(ctx, "tcp", running.httpsAddress)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		state := conn.(*tls.Conn).ConnectionState()
		if err := edgetest.CheckChallengeState(state, "a.example.com", account.KeyAuthorization(t, "token-a")); err != nil {
			t.Fatal(err)
		}
		// The edge closes the connection after the handshake.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("read after the handshake: %d bytes, %v; want EOF", n, err)
		}
	})

	t.Run("ordinary HTTPS gets the ordinary certificate and an answer", func(t *testing.T) {
		var served *tls.ConnectionState
		httpsClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				ServerName: "a.example.com", InsecureSkipVerify: true,
				VerifyConnection: func(state tls.ConnectionState) error { served = &state; return nil },
			},
			ForceAttemptHTTP2: true, // offers h2 and http/1.1, as browsers do
		}}
		defer httpsClient.CloseIdleConnections()
		status, _, err := get(ctx, httpsClient, "https://"+running.httpsAddress+"/")
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusNotFound {
			t.Errorf("status %d, want 404 (no route)", status)
		}
		if served == nil || !served.PeerCertificates[0].Equal(ordinary.Leaf) {
			t.Error("ordinary connection did not get the ordinary certificate")
		}
	})

	t.Run("http-01 on the HTTP port", func(t *testing.T) {
		status, body, err := get(ctx, client, "http://"+running.httpAddress+edge.HTTP01PathPrefix+"token-h")
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusOK || body != account.KeyAuthorization(t, "token-h") {
			t.Fatalf("got %d %q", status, body)
		}
	})

	running.shutdown(t)
	if err := running.server.Ready(); err == nil {
		t.Error("Ready after Shutdown")
	}
	if _, err := edgetest.Handshake(ctx, running.httpsAddress, "a.example.com", []string{acme.ALPNProto}, 0); err == nil {
		t.Error("handshake succeeded after Shutdown")
	}
}

func getURL(ctx context.Context, url string) (int, string, error) {
	return get(ctx, &http.Client{Timeout: 5 * time.Second}, url)
}

// containsLine reports whether metrics text has a sample line starting with prefix.
func containsLine(text, prefix string) bool {
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}
