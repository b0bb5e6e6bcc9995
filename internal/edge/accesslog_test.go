package edge_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// syncBuffer is an io.Writer that tests can read while the edge writes.
type syncBuffer struct {
	mu     sync.Mutex
	buffer bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buffer.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buffer.String()
}

// accessLine is one access log line as JSON.
type accessLine struct {
	Time          time.Time
	Listener      string
	Mode          string
	Kind          string
	Client        string
	SNI           string
	Host          string
	Method        string
	Path          string
	Protocol      string
	Status        int
	Bytes         int64
	BytesReceived *int64
	Duration      *float64
	Upstream      string
}

// waitForLines waits until log holds n lines and returns them parsed; every line must be JSON.
func waitForLines(t *testing.T, log *syncBuffer, n int) []accessLine {
	t.Helper()
	var lines []accessLine
	edgetest.Eventually(t, 5*time.Second, func() error {
		lines = nil
		for _, text := range strings.Split(strings.TrimSpace(log.String()), "\n") {
			if text == "" {
				continue
			}
			var line accessLine
			if err := json.Unmarshal([]byte(text), &line); err != nil {
				t.Fatalf("access log line %q is not JSON: %v", text, err)
			}
			lines = append(lines, line)
		}
		if len(lines) < n {
			return fmt.Errorf("%d access log lines, want %d:\n%s", len(lines), n, log.String())
		}
		return nil
	})
	return lines
}

// secrets are sent in every request of TestAccessLog; none may reach the log.
const (
	secretAuthorization = "Bearer secret-authorization-5f1c"
	secretCookie        = "session=secret-cookie-9a2e"
	secretQuery         = "secret-query-77d0"
)

func TestAccessLog(t *testing.T) {
	upstream := startEcho(t, "web")
	certificates := edge.NewCertificateStore()
	certificates.Replace("test", []*tls.Certificate{edgetest.SelfSignedCertificate(t, "www.example.com")})
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()

	t.Run("terminate: one line per request, HTTP/1.1 and HTTP/2", func(t *testing.T) {
		routes := edge.NewRoutes(edge.ModeTerminate)
		if err := routes.Load(routeFile("- {host: '*', upstream: '" + upstream.URL + "'}")); err != nil {
			t.Fatal(err)
		}
		log := &syncBuffer{}
		running := startServer(t, edge.Options{Mode: edge.ModeTerminate, Challenges: challenges, Certificates: certificates,
			Routes: routes, AccessLog: edge.NewAccessLog(log, 1), Log: testr.New(t)})
		for _, protocol := range []string{"http/1.1", "h2"} {
			request, err := http.NewRequest(http.MethodGet, "https://www.example.com/items/7?token="+secretQuery, nil)
			if err != nil {
				t.Fatal(err)
			}
			request.Header.Set("Authorization", secretAuthorization)
			request.Header.Set("Cookie", secretCookie)
			response, err := clientTo(running.httpsAddress, protocol).Do(request)
			if err != nil {
				t.Fatalf("%s: %v", protocol, err)
			}
			body, _ := io.ReadAll(response.Body)
			response.Body.Close()
			if response.StatusCode != http.StatusOK || !strings.Contains(string(body), secretCookie) {
				t.Fatalf("%s: %d %s: the upstream should have had the request with its headers", protocol, response.StatusCode, body)
			}
		}
		lines := waitForLines(t, log, 2)
		for i, protocol := range []string{"HTTP/1.1", "HTTP/2.0"} {
			line := lines[i]
			if line.Time.IsZero() || time.Since(line.Time) > time.Minute {
				t.Errorf("%s: time %v", protocol, line.Time)
			}
			if line.Listener != "https" || line.Mode != "terminate" || line.Kind != "request" || line.Protocol != protocol ||
				line.SNI != "www.example.com" || line.Host != "www.example.com" || line.Method != "GET" ||
				line.Path != "/items/7" || line.Status != http.StatusOK || line.Upstream != upstream.URL ||
				!strings.HasPrefix(line.Client, "127.0.0.1:") {
				t.Errorf("%s: line %+v", protocol, line)
			}
			if line.Bytes < 50 || line.Duration == nil || *line.Duration <= 0 {
				t.Errorf("%s: bytes %d, duration %v: want the echoed body's size and a duration", protocol, line.Bytes, line.Duration)
			}
		}
		for _, secret := range []string{"secret-authorization", "secret-cookie", secretQuery} {
			if strings.Contains(log.String(), secret) {
				t.Errorf("the access log holds %q:\n%s", secret, log.String())
			}
		}
	})

	t.Run("passthrough: one line per connection", func(t *testing.T) {
		tlsUpstream := startTLSUpstream(t, edgetest.SelfSignedCertificate(t, "www.example.com"), false)
		routes := edge.NewRoutes(edge.ModePassthrough)
		if err := routes.Load(routeFile("- {host: '*', upstream: '" + tlsUpstream + "'}")); err != nil {
			t.Fatal(err)
		}
		log := &syncBuffer{}
		running := startServer(t, edge.Options{Mode: edge.ModePassthrough, Challenges: challenges, Routes: routes,
			AccessLog: edge.NewAccessLog(log, 1), Log: testr.New(t)})
		conn, err := tls.Dial("tcp", running.httpsAddress, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: www.example.com\r\nAuthorization: %s\r\nConnection: close\r\n\r\n", secretAuthorization)
		if _, err := io.ReadAll(conn); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		line := waitForLines(t, log, 1)[0]
		if line.Listener != "https" || line.Mode != "passthrough" || line.Kind != "connection" || line.SNI != "www.example.com" ||
			line.Upstream != tlsUpstream || line.Method != "" || line.Path != "" {
			t.Errorf("line %+v", line)
		}
		if line.Bytes < 500 || line.BytesReceived == nil || *line.BytesReceived < 200 {
			t.Errorf("bytes %d, received %v: want a TLS handshake and a response each way", line.Bytes, line.BytesReceived)
		}
	})

	t.Run("HTTP listener: no http-01 token", func(t *testing.T) {
		log := &syncBuffer{}
		running := startServer(t, edge.Options{Mode: edge.ModeTerminate, Challenges: challenges, Certificates: certificates,
			AccessLog: edge.NewAccessLog(log, 1), Log: testr.New(t)})
		response, err := http.Get("http://" + running.httpAddress + edge.HTTP01PathPrefix + "token-that-is-no-secret-but-stays-out")
		if err != nil {
			t.Fatal(err)
		}
		response.Body.Close()
		line := waitForLines(t, log, 1)[0]
		if line.Listener != "http" || line.Status != http.StatusNotFound || line.Path != edge.HTTP01PathPrefix+"REDACTED" {
			t.Errorf("line %+v", line)
		}
	})

	t.Run("sampling keeps every 5xx", func(t *testing.T) {
		routes := edge.NewRoutes(edge.ModeTerminate)
		if err := routes.Load(routeFile("- {host: '*', upstream: '"+upstream.URL+"'}",
			"- {host: '*', pathPrefix: /down, upstream: 'http://127.0.0.1:1'}")); err != nil {
			t.Fatal(err)
		}
		log := &syncBuffer{}
		running := startServer(t, edge.Options{Mode: edge.ModeTerminate, Challenges: challenges, Certificates: certificates,
			Routes: routes, AccessLog: edge.NewAccessLog(log, 0), Log: testr.New(t)})
		client := clientTo(running.httpsAddress, "http/1.1")
		for _, url := range []string{"https://www.example.com/", "https://www.example.com/", "https://www.example.com/down"} {
			response, err := client.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, bufio.NewReader(response.Body))
			response.Body.Close()
		}
		lines := waitForLines(t, log, 1)
		if len(lines) != 1 || lines[0].Path != "/down" || lines[0].Status != http.StatusBadGateway {
			t.Errorf("with sampling 0, want only the 502: %+v", lines)
		}
	})
}
