package edge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// TestGracefulShutdown: in both modes, Shutdown stops new connections at once but lets a
// request in flight (terminate) or a spliced connection (passthrough) finish.
func TestGracefulShutdown(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-time.After(15 * time.Second):
		}
		_, _ = io.WriteString(w, "finished")
	}))
	defer slow.Close()
	upstreamCertificate := edgetest.SelfSignedCertificate(t, "www.example.com")
	slowTLS := httptest.NewUnstartedServer(slow.Config.Handler)
	slowTLS.TLS = &tls.Config{Certificates: []tls.Certificate{*upstreamCertificate}}
	slowTLS.StartTLS()
	defer slowTLS.Close()

	for mode, upstream := range map[edge.Mode]string{
		edge.ModeTerminate:   slow.URL,
		edge.ModePassthrough: slowTLS.Listener.Addr().String(),
	} {
		t.Run(string(mode), func(t *testing.T) {
			routes := edge.NewRoutes(mode)
			if err := routes.Load(routeFile("- {host: '*', upstream: '" + upstream + "'}")); err != nil {
				t.Fatal(err)
			}
			certificates := edge.NewCertificateStore()
			certificates.Replace("test", []*tls.Certificate{edgetest.SelfSignedCertificate(t, "www.example.com")})
			challenges := edge.NewChallengeStore()
			challenges.MarkSynced()
			running := startServer(t, edge.Options{Mode: mode, Challenges: challenges, Certificates: certificates, Routes: routes, Log: testr.New(t)})

			conn, err := tls.Dial("tcp", running.httpsAddress, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"); err != nil {
				t.Fatal(err)
			}

			shutdownDone := make(chan error, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			// Shut down only once the request has reached the upstream.
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("the request did not reach the upstream")
			}
			go func() { shutdownDone <- running.server.Shutdown(ctx) }()
			edgetest.Eventually(t, 5*time.Second, func() error {
				if _, err := edgetest.Handshake(ctx, running.httpsAddress, "www.example.com", nil, 0); err == nil {
					return fmt.Errorf("new connections still accepted")
				}
				return nil
			})
			if running.server.Ready() == nil {
				t.Error("ready during shutdown")
			}
			select {
			case err := <-shutdownDone:
				t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
			default:
			}

			release <- struct{}{}
			response, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("the request in flight failed: %v", err)
			}
			body, _ := io.ReadAll(response.Body)
			response.Body.Close()
			if string(body) != "finished" {
				t.Errorf("got %q", body)
			}
			conn.Close()
			if err := <-shutdownDone; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		})
	}
}
