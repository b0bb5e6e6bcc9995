package edge_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// recordingUpstream is an HTTP/1.1 upstream that parses requests strictly (net/http's parser)
// and records each complete one it sees (a body cut off by a closed connection is none): "METHOD URI HOST BODY", plus " xff=<value>" when
// X-Forwarded-For is not the edge's (127.0.0.1). It answers 200 to everything, except that an
// upgrade request for /upgrade is switched (101, echoing the protocol asked for) and one for
// /wrong-upgrade gets a 101 for another protocol; after a 101 it echoes bytes.
type recordingUpstream struct {
	listener net.Listener
	mu       sync.Mutex
	requests []string
}

func startRecordingUpstream(t *testing.T) *recordingUpstream {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &recordingUpstream{listener: listener}
	t.Cleanup(func() { _ = listener.Close() })
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go u.serve(conn)
		}
	}()
	return u
}

func (u *recordingUpstream) serve(conn net.Conn) {
	defer conn.Close()
	reader := bufio.NewReader(conn)
	for {
		request, err := http.ReadRequest(reader)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				u.record("malformed: " + err.Error())
			}
			return
		}
		body, err := io.ReadAll(request.Body)
		if err != nil {
			// A streamed body the edge cut off when its client's framing broke: the edge
			// closed the connection, and no request was complete. (It may come in after the
			// exchange that caused it has ended, so it is not recorded with the requests.)
			return
		}
		entry := fmt.Sprintf("%s %s %s %s", request.Method, request.RequestURI, request.Host, body)
		if xff := request.Header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
			entry += " xff=" + xff
		}
		u.record(strings.TrimSpace(entry))
		switch protocol := request.Header.Get("Upgrade"); {
		case protocol != "" && request.URL.Path == "/upgrade":
			fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", protocol)
			_, _ = io.Copy(conn, reader)
			return
		case protocol != "" && request.URL.Path == "/wrong-upgrade":
			fmt.Fprint(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n")
			_, _ = io.Copy(conn, reader)
			return
		}
		if _, err := fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

func (u *recordingUpstream) record(entry string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.requests = append(u.requests, entry)
}

// take returns what was recorded since the last take.
func (u *recordingUpstream) take() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	requests := u.requests
	u.requests = nil
	return requests
}

// exchange sends raw on a new TLS connection to the edge, closes its sending side, and returns
// the status codes of the responses read until the edge closes the connection.
func exchange(t *testing.T, address, raw string) []int {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", address,
		&tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	_ = conn.CloseWrite()
	reader := bufio.NewReader(conn)
	var statuses []int
	for {
		response, err := http.ReadResponse(reader, nil)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
				return statuses
			}
			var netErr net.Error
			if errors.As(err, &netErr) && netErr.Timeout() {
				t.Fatalf("the edge neither answered nor closed the connection (responses so far %v)", statuses)
			}
			// Bytes after a 101 are the tunnel's: what follows is not HTTP.
			return statuses
		}
		statuses = append(statuses, response.StatusCode)
		if response.StatusCode == http.StatusSwitchingProtocols {
			_, _ = io.Copy(io.Discard, reader)
			return statuses
		}
		_, _ = io.Copy(io.Discard, response.Body)
		response.Body.Close()
	}
}

// TestRequestSmuggling sends requests that frame HTTP/1.1 ambiguously, or smuggle a second
// request past routing, to the edge in front of a recording upstream: for every variant the
// upstream sees exactly the requests the client framed (want), or the edge refuses the
// message (a 4xx or 5xx answer, the connection closed) and the upstream sees only the requests
// before it, and no complete request after.
func TestRequestSmuggling(t *testing.T) {
	upstream := startRecordingUpstream(t)
	routes := edge.NewRoutes(edge.ModeTerminate)
	if err := routes.Load(routeFile("- {host: a.example.com, upstream: 'http://" + upstream.listener.Addr().String() + "'}")); err != nil {
		t.Fatal(err)
	}
	certificates := edge.NewCertificateStore()
	certificates.Replace("test", []*tls.Certificate{edgetest.SelfSignedCertificate(t, "a.example.com", "admin.internal")})
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()
	running := startServer(t, edge.Options{Challenges: challenges, Certificates: certificates, Routes: routes, Log: testr.New(t)})

	const (
		host     = "Host: a.example.com\r\n"
		get      = "GET / HTTP/1.1\r\n" + host + "\r\n"
		post     = "POST / HTTP/1.1\r\n" + host
		smuggled = "GET /smuggled HTTP/1.1\r\nHost: admin.internal\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
		next     = "GET /next HTTP/1.1\r\n" + host + "\r\n"
		upgrade  = "Connection: Upgrade\r\nUpgrade: websocket\r\n"
	)
	for name, tc := range map[string]struct {
		raw string
		// want are the requests the upstream must see.
		want []string
		// refused: the edge must answer the last message with an error and close.
		refused bool
	}{
		// Well framed: everything arrives, in order.
		"pipelined GETs":          {raw: get + next, want: []string{"GET / a.example.com", "GET /next a.example.com"}},
		"content-length body":     {raw: post + "Content-Length: 5\r\n\r\nhello" + next, want: []string{"POST / a.example.com hello", "GET /next a.example.com"}},
		"chunked body":            {raw: post + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next, want: []string{"POST / a.example.com hello", "GET /next a.example.com"}},
		"chunked, case":           {raw: post + "Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next, want: []string{"POST / a.example.com hello", "GET /next a.example.com"}},
		"chunk extension":         {raw: post + "Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n" + next, want: []string{"POST / a.example.com hello", "GET /next a.example.com"}},
		"chunked with trailer":    {raw: post + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n" + next, want: []string{"POST / a.example.com hello", "GET /next a.example.com"}},
		"content-length OWS":      {raw: post + "Content-Length:  5 \r\n\r\nhello" + next, want: []string{"POST / a.example.com hello", "GET /next a.example.com"}},
		"client's X-Forwarded-*":  {raw: "GET / HTTP/1.1\r\n" + host + "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n", want: []string{"GET / a.example.com"}},
		"smuggled by Host":        {raw: get + smuggled + next, want: []string{"GET / a.example.com", "GET /next a.example.com"}},
		"Connection names Host":   {raw: "GET / HTTP/1.1\r\n" + host + "Connection: Host\r\n\r\n" + next, want: []string{"GET / a.example.com", "GET /next a.example.com"}},
		"Connection names length": {raw: post + "Connection: Content-Length\r\nContent-Length: 5\r\n\r\nhello" + next, want: []string{"POST / a.example.com hello", "GET /next a.example.com"}},
		"Connection names TE": {raw: post + "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next,
			want: []string{"POST / a.example.com hello", "GET /next a.example.com"}},

		// CL.TE, TE.CL and duplicate lengths.
		"CL.TE": {raw: post + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG" + next, refused: true},
		"TE.CL": {raw: post + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n" + next, refused: true},
		"CL.TE with smuggled request": {raw: post + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			refused: true},
		"duplicate content-length":          {raw: post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!" + next, refused: true},
		"duplicate equal content-length":    {raw: post + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + next, refused: true},
		"content-length list":               {raw: post + "Content-Length: 5, 5\r\n\r\nhello" + next, refused: true},
		"content-length sign":               {raw: post + "Content-Length: +5\r\n\r\nhello" + next, refused: true},
		"content-length negative":           {raw: post + "Content-Length: -1\r\n\r\nhello" + next, refused: true},
		"content-length hex":                {raw: post + "Content-Length: 0x5\r\n\r\nhello" + next, refused: true},
		"content-length overflow":           {raw: post + "Content-Length: 99999999999999999999999\r\n\r\nhello" + next, refused: true},
		"content-length space before colon": {raw: post + "Content-Length : 5\r\n\r\nhello" + next, refused: true},

		// TE.TE obfuscations.
		"TE twice":                  {raw: post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"TE list":                   {raw: post + "Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"TE unknown":                {raw: post + "Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"TE identity":               {raw: post + "Transfer-Encoding: identity\r\n\r\n" + next, refused: true},
		"TE space before colon":     {raw: post + "Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"TE obs-fold":               {raw: post + "Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"TE vertical tab":           {raw: post + "Transfer-Encoding:\x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"TE on HTTP/1.0":            {raw: "POST / HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"TE name with underscore":   {raw: post + "Transfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello" + next, refused: true},
		"header name with space":    {raw: "GET / HTTP/1.1\r\n" + host + "X Header: 1\r\n\r\n" + next, refused: true},
		"obs-fold":                  {raw: "GET / HTTP/1.1\r\n" + host + "X-Folded: a\r\n b\r\n\r\n" + next, refused: true},
		"bare LF":                   {raw: "GET / HTTP/1.1\n" + "Host: a.example.com\n\n" + next, refused: true},
		"bare LF in a header line":  {raw: "GET / HTTP/1.1\r\n" + host + "X-A: 1\nX-B: 2\r\n\r\n" + next, refused: true},
		"bare CR in a header value": {raw: "GET / HTTP/1.1\r\n" + host + "X-A: 1\rX-B: 2\r\n\r\n" + next, refused: true},
		"NUL in a header value":     {raw: "GET / HTTP/1.1\r\n" + host + "X-A: 1\x00\r\n\r\n" + next, refused: true},
		"two Host headers":          {raw: "GET / HTTP/1.1\r\n" + host + "Host: admin.internal\r\n\r\n" + next, refused: true},
		"no Host":                   {raw: "GET / HTTP/1.1\r\n\r\n" + next, refused: true},
		"absolute-form to another host": {raw: "GET http://admin.internal/ HTTP/1.1\r\n" + host + "\r\n" + next,
			refused: true},

		// Bad chunks.
		"chunk size hex prefix":  {raw: post + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"chunk size negative":    {raw: post + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"chunk size overlong":    {raw: post + "Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"chunk size space":       {raw: post + "Transfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"chunk longer than size": {raw: post + "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n" + next, refused: true},
		"chunk bare LF":          {raw: post + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" + next, refused: true},
		"chunk extension bare LF": {raw: post + "Transfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n" + next,
			refused: true},
		"request in the trailer": {raw: post + "Transfer-Encoding: chunked\r\n\r\n0\r\n" + smuggled, refused: true},

		// Upgrades: no request after an upgrade request reaches the upstream past routing unless
		// the upstream switched protocols.
		"upgrade refused, then pipelined": {raw: "GET / HTTP/1.1\r\n" + host + upgrade + "\r\n" + smuggled,
			want: []string{"GET / a.example.com"}},
		"Connection: upgrade without Upgrade": {raw: "GET / HTTP/1.1\r\n" + host + "Connection: upgrade\r\n\r\n" + smuggled + next,
			want: []string{"GET / a.example.com", "GET /next a.example.com"}},
		"upgrade with a chunked body": {raw: "POST /upgrade HTTP/1.1\r\n" + host + upgrade + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			refused: true},
		"upgrade to another protocol": {raw: "GET /wrong-upgrade HTTP/1.1\r\n" + host + upgrade + "\r\n" + smuggled,
			want: []string{"GET /wrong-upgrade a.example.com"}, refused: true},
		"upgrade switched": {raw: "GET /upgrade HTTP/1.1\r\n" + host + upgrade + "\r\n" + "tunnelled bytes",
			want: []string{"GET /upgrade a.example.com"}},
	} {
		t.Run(name, func(t *testing.T) {
			upstream.take()
			statuses := exchange(t, running.httpsAddress, tc.raw)
			got := upstream.take()
			if !slices.Equal(got, tc.want) {
				t.Errorf("the upstream saw\n  %q\nwant\n  %q\n(responses %v)", got, tc.want, statuses)
			}
			if tc.refused && (len(statuses) == 0 || statuses[len(statuses)-1] < 400) {
				t.Errorf("responses %v, want the last one refused (4xx or 5xx)", statuses)
			}
			if !tc.refused && len(statuses) < len(tc.want) {
				t.Errorf("responses %v, want %d", statuses, len(tc.want))
			}
		})
	}
}

// TestUpgradeTunnel: the edge opens a tunnel only when the upstream switches to the protocol the
// client asked for; then the client's bytes, pipelined ones included, are the tunnel's. Any
// other answer ends the connection, so a request pipelined after an upgrade request never
// reaches an upstream without routing (its Host) and the edge's X-Forwarded-For.
func TestUpgradeTunnel(t *testing.T) {
	upstream := startRecordingUpstream(t)
	routes := edge.NewRoutes(edge.ModeTerminate)
	if err := routes.Load(routeFile("- {host: a.example.com, upstream: 'http://" + upstream.listener.Addr().String() + "'}")); err != nil {
		t.Fatal(err)
	}
	certificates := edge.NewCertificateStore()
	certificates.Replace("test", []*tls.Certificate{edgetest.SelfSignedCertificate(t, "a.example.com")})
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()
	running := startServer(t, edge.Options{Challenges: challenges, Certificates: certificates, Routes: routes, Log: testr.New(t)})
	const smuggled = "GET /admin HTTP/1.1\r\nHost: admin.internal\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"

	t.Run("switched", func(t *testing.T) {
		upstream.take()
		conn, err := tls.Dial("tcp", running.httpsAddress, &tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		// The request and bytes pipelined after it: once switched, those are the tunnel's.
		fmt.Fprint(conn, "GET /upgrade HTTP/1.1\r\nHost: a.example.com\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n"+smuggled)
		reader := bufio.NewReader(conn)
		response, err := http.ReadResponse(reader, nil)
		if err != nil {
			t.Fatal(err)
		}
		if response.StatusCode != http.StatusSwitchingProtocols || response.Header.Get("Upgrade") != "echo/1" {
			t.Fatalf("answer %d, Upgrade %q; want 101 echo/1", response.StatusCode, response.Header.Get("Upgrade"))
		}
		echoed := make([]byte, len(smuggled))
		if _, err := io.ReadFull(reader, echoed); err != nil || string(echoed) != smuggled {
			t.Fatalf("tunnel echoed %q, %v; want the pipelined bytes", echoed, err)
		}
		if got := upstream.take(); !slices.Equal(got, []string{"GET /upgrade a.example.com"}) {
			t.Errorf("the upstream saw %q as requests, want only the upgrade request", got)
		}
	})
	for name, request := range map[string]string{
		"not switched":               "GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"switched to another":        "GET /wrong-upgrade HTTP/1.1\r\nHost: a.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"Connection without Upgrade": "GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: upgrade\r\n\r\n",
		"Upgrade without Connection": "GET / HTTP/1.1\r\nHost: a.example.com\r\nUpgrade: websocket\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			upstream.take()
			statuses := exchange(t, running.httpsAddress, request+smuggled)
			for _, seen := range upstream.take() {
				if strings.Contains(seen, "/admin") || strings.Contains(seen, "admin.internal") || strings.Contains(seen, "xff=") {
					t.Errorf("a pipelined request bypassed routing: the upstream saw %q (responses %v)", seen, statuses)
				}
			}
			if len(statuses) == 0 {
				t.Errorf("no answer to the upgrade request")
			}
		})
	}
}
