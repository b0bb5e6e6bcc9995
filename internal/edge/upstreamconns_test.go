package edge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// scriptedUpstream answers HTTP/1.1 requests by path, counting the connections it accepted and
// sending each request's line and User-Agent to seen: /ok "ok" (Content-Length), /big 100,000
// bytes, /chunked "ok" in two chunks, /close "ok" with
// Connection: close, /drop "ok" and then closes the connection without saying so (an idle
// keep-alive connection the upstream ends), /malformed a header fasthttp refuses, /hang
// nothing until the connection closes; any other path no bytes (Content-Length 0).
func scriptedUpstream(t *testing.T) (address string, accepted *atomic.Int32, seen chan string) {
	t.Helper()
	seen = make(chan string, 100)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = listener.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer conn.Close()
				reader := bufio.NewReader(conn)
				for {
					request, err := http.ReadRequest(reader)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, request.Body)
					seen <- fmt.Sprintf("%s %s %q", request.Method, request.RequestURI, request.UserAgent())
					head := request.Method == http.MethodHead
					body := func(s string) string {
						if head {
							return ""
						}
						return s
					}
					answer := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
					switch request.URL.Path {
					case "/ok", "/drop":
						answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + body("ok")
					case "/big":
						answer = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + body(strings.Repeat("x", 100000))
					case "/chunked":
						answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body("1\r\no\r\n1\r\nk\r\n0\r\n\r\n")
					case "/malformed":
						answer = "HTTP/1.1 200 OK\r\nSet-Cookie: session=upstream-secret\r\nContent-Length: 2\r\nBroken header\r\n\r\nok"
					case "/hang":
						_, _ = io.Copy(io.Discard, reader)
						return
					case "/close":
						answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n" + body("ok")
					}
					if _, err := io.WriteString(conn, answer); err != nil || request.URL.Path == "/close" || request.URL.Path == "/drop" {
						return
					}
				}
			}()
		}
	}()
	return listener.Addr().String(), accepted, seen
}

// TestUpstreamConns: keep-alive connections are reused only after a response read to its end
// that did not ask to close them; a GET on a connection the upstream had closed is sent again.
func TestUpstreamConns(t *testing.T) {
	address, accepted, seen := scriptedUpstream(t)
	target, _ := url.Parse("http://" + address)
	client := newUpstreamClient(target, false, Timeouts{Dial: Duration{5 * time.Second}, ResponseHeader: Duration{5 * time.Second},
		Idle: Duration{time.Minute}})
	// get sends method path, reads the body (at most limit bytes) and ends the exchange.
	get := func(method, path string, limit int64) (string, error) {
		t.Helper()
		request := fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(request)
		request.Header.SetMethod(method)
		request.SetRequestURI("http://" + address + path)
		exchange, err := client.conns.do(request)
		if err != nil {
			return "", err
		}
		body, err := io.ReadAll(io.LimitReader(exchange, limit))
		_ = exchange.Close()
		return fmt.Sprintf("%d %s", exchange.header().StatusCode(), body), err
	}
	// step sends a request and checks its answer and the upstream's connection count after it.
	step := func(method, path string, limit int64, want string, connections int32) {
		t.Helper()
		got, err := get(method, path, limit)
		if err != nil || got != want {
			t.Fatalf("%s %s: %q, %v; want %q", method, path, got, err, want)
		}
		if n := accepted.Load(); n != connections {
			t.Fatalf("after %s %s: %d upstream connections, want %d", method, path, n, connections)
		}
	}
	step("GET", "/ok", 100, "200 ok", 1)
	if got, want := <-seen, `GET /ok ""`; got != want {
		t.Errorf("the upstream saw %s, want %s (no User-Agent added)", got, want)
	}
	step("GET", "/ok", 100, "200 ok", 1)         // reused
	step("GET", "/chunked", 100, "200 ok", 1)    // chunked, read to its end: reused
	step("GET", "/empty", 100, "200 ", 1)        // no bytes: reused
	step("HEAD", "/ok", 100, "200 ", 1)          // no body: reused
	step("GET", "/big", 10, "200 xxxxxxxxxx", 1) // not read to its end: closed
	step("GET", "/ok", 100, "200 ok", 2)         // so a new connection
	step("GET", "/close", 100, "200 ok", 2)      // the upstream closes it
	step("GET", "/ok", 100, "200 ok", 3)         // so a new connection
	step("GET", "/drop", 100, "200 ok", 3)       // closed by the upstream, unannounced
	step("GET", "/ok", 100, "200 ok", 4)         // sent again on a new connection
	step("GET", "/big", 200000, "200 "+strings.Repeat("x", 100000), 4)
	step("GET", "/ok", 100, "200 ok", 4)

	// A POST is not sent again: it fails on the connection the upstream had closed.
	step("GET", "/drop", 100, "200 ok", 4)
	post := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(post)
	post.Header.SetMethod("POST")
	post.SetRequestURI("http://" + address + "/ok")
	post.SetBodyString("x")
	if exchange, err := client.conns.do(post); err == nil {
		_ = exchange.Close()
		t.Errorf("POST on a connection the upstream closed: no error")
	}
	for len(seen) > 0 {
		<-seen
	}

	// The path goes as the client sent it; a malformed response's bytes stay out of the error.
	step("GET", "/ok", 100, "200 ok", 5)
	<-seen
	step("GET", "/ok/../a//b/%2e%2e/?q=%2F", 100, "200 ", 5)
	if got, want := <-seen, `GET /ok/../a//b/%2e%2e/?q=%2F ""`; got != want {
		t.Errorf("the upstream saw %s, want %s", got, want)
	}
	if _, err := get("GET", "/malformed", 100); err == nil || strings.Contains(err.Error(), "upstream-secret") {
		t.Errorf("malformed response: error %v, want one without the response's bytes", err)
	}
}

// TestUpstreamConnsTimeout: a request whose response did not begin in time is not sent again.
func TestUpstreamConnsTimeout(t *testing.T) {
	address, _, seen := scriptedUpstream(t)
	target, _ := url.Parse("http://" + address)
	client := newUpstreamClient(target, false, Timeouts{Dial: Duration{5 * time.Second}, ResponseHeader: Duration{200 * time.Millisecond},
		Idle: Duration{time.Minute}})
	request := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(request)
	request.SetRequestURI("http://" + address + "/hang")
	if exchange, err := client.conns.do(request); err == nil || !errors.Is(err, fasthttp.ErrTimeout) {
		if exchange != nil {
			_ = exchange.Close()
		}
		t.Fatalf("GET /hang: %v, want a timeout", err)
	}
	<-seen
	select {
	case again := <-seen:
		t.Errorf("sent again after a timeout: %s", again)
	case <-time.After(300 * time.Millisecond):
	}
}
