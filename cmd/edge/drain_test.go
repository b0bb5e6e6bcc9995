package main_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/testenv"
)

// drainDeadline is the --shutdown-timeout of TestDrainOnSIGTERM.
const drainDeadline = 3 * time.Second

// TestDrainOnSIGTERM: on SIGTERM the edge reports not ready, stops accepting, keeps an upgraded
// WebSocket connection (terminate mode) and a spliced connection (passthrough mode) working,
// lets one that the client closes end, and closes the other at --shutdown-timeout; then it
// exits 0.
func TestDrainOnSIGTERM(t *testing.T) {
	testenv.SkipIfShort(t) // builds the binary
	binary := buildEdge(t)
	certificate := edgetest.SelfSignedCertificate(t, "www.example.test")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, edgetest.ChainPEM(certificate), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, edgetest.KeyPEM(t, certificate), 0o600); err != nil {
		t.Fatal(err)
	}

	// An HTTP upstream that upgrades WebSocket requests to a byte echo.
	webSocket := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want a WebSocket upgrade", http.StatusBadRequest)
			return
		}
		conn, buffered, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = buffered.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = buffered.Flush()
		_, _ = io.Copy(conn, buffered)
	}))
	t.Cleanup(webSocket.Close)
	// A TLS upstream that echoes bytes, behind the passthrough edge.
	tlsEcho, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*certificate}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tlsEcho.Close() })
	go func() {
		for {
			conn, err := tlsEcho.Accept()
			if err != nil {
				return
			}
			go func() { defer conn.Close(); _, _ = io.Copy(conn, conn) }()
		}
	}()

	for _, tc := range []struct {
		name string
		args []string
		// open returns a connection that echoes through the edge.
		open func(t *testing.T, address string) (net.Conn, *bufio.Reader)
	}{
		{
			name: "WebSocket in terminate mode",
			args: []string{"--mode", "terminate", "--upstream", webSocket.URL, "--certificate", certFile, "--key", keyFile},
			open: func(t *testing.T, address string) (net.Conn, *bufio.Reader) {
				conn := dialTLS(t, address, "http/1.1")
				fmt.Fprint(conn, "GET /socket HTTP/1.1\r\nHost: www.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
					"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
				reader := bufio.NewReader(conn)
				response, err := http.ReadResponse(reader, nil)
				if err != nil || response.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("upgrade: %v %v", response, err)
				}
				return conn, reader
			},
		},
		{
			name: "passthrough",
			args: []string{"--mode", "passthrough", "--upstream", tlsEcho.Addr().String()},
			open: func(t *testing.T, address string) (net.Conn, *bufio.Reader) {
				conn := dialTLS(t, address, "")
				return conn, bufio.NewReader(conn)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			httpsAddress, healthAddress := testenv.FreeAddress(t), testenv.FreeAddress(t)
			edgeProcess := start(t, binary, append(tc.args,
				"--challenge-dir", t.TempDir(),
				"--https-bind-address", httpsAddress,
				"--http-bind-address", testenv.FreeAddress(t),
				"--health-bind-address", healthAddress,
				"--shutdown-timeout", drainDeadline.String(),
			)...)
			waitReady(t, edgeProcess, healthAddress)

			closedByClient, closedByClientReader := tc.open(t, httpsAddress)
			defer closedByClient.Close()
			open, openReader := tc.open(t, httpsAddress)
			defer open.Close()
			echo(t, closedByClient, closedByClientReader, "before")
			echo(t, open, openReader, "before")

			signalled := time.Now()
			if err := edgeProcess.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			edgetest.Eventually(t, drainDeadline, func() error {
				response, err := http.Get("http://" + healthAddress + "/readyz")
				if err != nil {
					return nil // the health listener is closed: not ready either
				}
				response.Body.Close()
				if response.StatusCode == http.StatusOK {
					return errors.New("still ready after SIGTERM")
				}
				return nil
			})
			edgetest.Eventually(t, drainDeadline, func() error {
				conn, err := net.DialTimeout("tcp", httpsAddress, time.Second)
				if err == nil {
					conn.Close()
					return errors.New("new connections still accepted after SIGTERM")
				}
				return nil
			})

			// Draining: both connections still work; the client ends one.
			echo(t, closedByClient, closedByClientReader, "draining")
			echo(t, open, openReader, "draining")
			closedByClient.Close()

			// The other is closed by the edge at the deadline, not before.
			_ = open.SetReadDeadline(time.Now().Add(drainDeadline + 10*time.Second))
			_, err := openReader.ReadByte()
			closedAfter := time.Since(signalled)
			if err == nil || isTimeout(err) {
				t.Fatalf("the connection was not closed by the edge at the deadline: %v", err)
			}
			if closedAfter < drainDeadline-500*time.Millisecond || closedAfter > drainDeadline+5*time.Second {
				t.Errorf("closed %v after SIGTERM, want about the %v deadline", closedAfter.Round(time.Millisecond), drainDeadline)
			}
			if code := edgeProcess.wait(t, 10*time.Second); code != 0 {
				t.Errorf("edge exited with %d after draining", code)
			}
		})
	}
}

// dialTLS opens a TLS connection to address for www.example.test, offering protocol ("" none).
func dialTLS(t *testing.T, address, protocol string) net.Conn {
	t.Helper()
	config := &tls.Config{ServerName: "www.example.test", InsecureSkipVerify: true}
	if protocol != "" {
		config.NextProtos = []string{protocol}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", address, config)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// echo sends a line through conn and checks that it comes back.
func echo(t *testing.T, conn net.Conn, reader *bufio.Reader, text string) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintln(conn, text); err != nil {
		t.Fatalf("sending %q: %v", text, err)
	}
	line, err := reader.ReadString('\n')
	if err != nil || line != text+"\n" {
		t.Fatalf("echo of %q: %q, %v", text, line, err)
	}
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}
