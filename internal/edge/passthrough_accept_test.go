package edge_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// byteRecordingUpstream accepts connections and sends what each one read until its end on
// the returned channel.
func byteRecordingUpstream(t *testing.T) (string, <-chan []byte) {
	t.Helper()
	received := make(chan []byte, 16)
	address := serveTCP(t, func(conn net.Conn) {
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		read, _ := io.ReadAll(conn)
		received <- read
	})
	return address, received
}

// startPassthroughTo serves passthrough connections for h.example.com to upstream.
func startPassthroughTo(t *testing.T, upstream string) (*runningServer, *edge.Metrics) {
	t.Helper()
	routes := edge.NewRoutes(edge.ModePassthrough)
	if err := routes.Load(routeFile("- {host: h.example.com, upstream: '" + upstream + "'}")); err != nil {
		t.Fatal(err)
	}
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()
	metrics := edge.NewMetrics()
	running := startServer(t, edge.Options{Mode: edge.ModePassthrough, Challenges: challenges, Routes: routes, Metrics: metrics, Log: testr.New(t)})
	return running, metrics
}

func dialTCP(t *testing.T, address string) *net.TCPConn {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	return conn.(*net.TCPConn)
}

// waitClosed reads conn until the edge ends it and returns what was read.
func waitClosed(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	read, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Errorf("reading until the edge closes: %v", err)
	}
	return read
}

func isReset(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "read" && !opErr.Timeout()
}

// waitOpenConnections waits until the HTTPS listener has no open connection left.
func waitOpenConnections(t *testing.T, metrics *edge.Metrics) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, metrics, "certpilot_edge_open_connections", map[string]string{"listener": "https"}) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("open HTTPS connections never went back to 0")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// splitRecords re-frames the handshake message of a one-record ClientHello into records of at
// most size bytes each.
func splitRecords(hello []byte, size int) []byte {
	message := hello[5:]
	var out []byte
	for len(message) > 0 {
		n := min(size, len(message))
		out = append(out, hello[0], hello[1], hello[2], byte(n>>8), byte(n))
		out = append(out, message[:n]...)
		message = message[n:]
	}
	return out
}

// TestPassthroughClientHelloFraming: however the client's ClientHello arrives (in pieces, its
// message across several records, with more bytes behind it), the upstream receives exactly
// the bytes the client sent.
func TestPassthroughClientHelloFraming(t *testing.T) {
	upstream, received := byteRecordingUpstream(t)
	running, metrics := startPassthroughTo(t, upstream)
	hello := recordClientHello(t, &tls.Config{ServerName: "h.example.com"})

	for _, test := range []struct {
		name   string
		pieces [][]byte
	}{
		{"in one write", [][]byte{hello, []byte("after")}},
		{"in pieces", [][]byte{hello[:1], hello[1:4], hello[4:9], hello[9:100], hello[100:], []byte("after")}},
		{"one byte at a time", func() [][]byte {
			var pieces [][]byte
			for i := range hello {
				pieces = append(pieces, hello[i:i+1])
			}
			return pieces
		}()},
		{"across records", [][]byte{splitRecords(hello, 100)}},
		{"across records, in pieces", func() [][]byte {
			split := splitRecords(hello, 7)
			return [][]byte{split[:3], split[3:40], split[40:41], split[41:]}
		}()},
		{"with more after it", [][]byte{append(append([]byte{}, hello...), "early data"...)}},
	} {
		t.Run(test.name, func(t *testing.T) {
			conn := dialTCP(t, running.httpsAddress)
			_ = conn.SetNoDelay(true)
			var sent []byte
			for i, piece := range test.pieces {
				if i > 0 {
					// Separate segments: the edge reads the hello in pieces.
					time.Sleep(2 * time.Millisecond)
				}
				if _, err := conn.Write(piece); err != nil {
					t.Fatal(err)
				}
				sent = append(sent, piece...)
			}
			_ = conn.CloseWrite()
			select {
			case got := <-received:
				if !bytes.Equal(got, sent) {
					t.Errorf("upstream received %d bytes, want the %d the client sent", len(got), len(sent))
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream received nothing")
			}
			if rest := waitClosed(t, conn); len(rest) != 0 {
				t.Errorf("client read %q, want the end", rest)
			}
		})
	}
	waitOpenConnections(t, metrics)
}

// TestPassthroughClientHelloRefused: connections whose ClientHello cannot be read are closed
// without reaching the upstream and counted as failed handshakes: oversized, never complete,
// not TLS, too slow, ended early.
func TestPassthroughClientHelloRefused(t *testing.T) {
	const helloTimeout = 300 * time.Millisecond
	edge.SetClientHelloTimeout(t, helloTimeout)
	upstream, received := byteRecordingUpstream(t)
	running, metrics := startPassthroughTo(t, upstream)
	hello := recordClientHello(t, &tls.Config{ServerName: "h.example.com"})
	failed := func() float64 {
		return metricValue(t, metrics, "certpilot_edge_tls_handshakes_total", map[string]string{"result": "failed"})
	}

	for _, test := range []struct {
		name string
		send func(conn *net.TCPConn)
		slow bool // closed by the hello timeout
	}{
		{"oversized message", func(conn *net.TCPConn) {
			_, _ = conn.Write([]byte{22, 3, 1, 0, 4, 1, 0x01, 0x11, 0x70}) // a 70,000-byte ClientHello
		}, false},
		{"too many records", func(conn *net.TCPConn) {
			// One byte of a 65,539-byte ClientHello per record: it would not be whole before
			// the edge's limit.
			var records []byte
			for i := 0; len(records) < 128<<10; i++ {
				payload := byte(0)
				switch i {
				case 0:
					payload = 1
				case 2, 3:
					payload = 0xff
				}
				records = append(records, 22, 3, 1, 0, 1, payload)
			}
			_, _ = conn.Write(records)
		}, false},
		{"not TLS", func(conn *net.TCPConn) {
			_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: h.example.com\r\n\r\n")
		}, false},
		{"not a ClientHello", func(conn *net.TCPConn) {
			_, _ = conn.Write([]byte{22, 3, 3, 0, 4, 2, 0, 0, 0}) // a ServerHello
		}, false},
		{"ended before the hello", func(conn *net.TCPConn) {
			_, _ = conn.Write(hello[:len(hello)/2])
			_ = conn.CloseWrite()
		}, false},
		{"half a hello, then nothing", func(conn *net.TCPConn) {
			_, _ = conn.Write(hello[:len(hello)/2])
		}, true},
		{"nothing", func(*net.TCPConn) {}, true},
	} {
		t.Run(test.name, func(t *testing.T) {
			before := failed()
			conn := dialTCP(t, running.httpsAddress)
			started := time.Now()
			test.send(conn)
			waitClosed(t, conn)
			waited := time.Since(started)
			if test.slow && waited < helloTimeout {
				t.Errorf("closed after %v, before the hello timeout", waited)
			}
			if !test.slow && waited >= helloTimeout {
				t.Errorf("closed only after %v, by the hello timeout", waited)
			}
			if after := failed(); after != before+1 {
				t.Errorf("failed handshakes went from %v to %v, want one more", before, after)
			}
		})
	}
	select {
	case got := <-received:
		t.Errorf("the upstream received a connection (%d bytes)", len(got))
	default:
	}
	waitOpenConnections(t, metrics)
}

// TestPassthroughHandBack: what the splicers hand back to Go's passthrough path works there:
// a route whose upstream is a host name (resolved by Go's dialer), next to acme-tls/1 (in
// TestPassthrough).
func TestPassthroughHandBack(t *testing.T) {
	ctx := testContext(t)
	certificate := edgetest.SelfSignedCertificate(t, "h.example.com")
	upstream := startTLSUpstream(t, certificate, false)
	_, port, _ := net.SplitHostPort(upstream)
	running, metrics := startPassthroughTo(t, "localhost:"+port)
	for i := range 3 {
		state, err := edgetest.Handshake(ctx, running.httpsAddress, "h.example.com", nil, 0)
		if err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
		if !state.PeerCertificates[0].Equal(certificate.Leaf) {
			t.Errorf("handshake %d: the client saw %v, want the upstream's certificate", i, state.PeerCertificates[0].DNSNames)
		}
	}
	if spliced := metricValue(t, metrics, "certpilot_edge_tls_handshakes_total", map[string]string{"result": "passthrough"}); spliced != 3 {
		t.Errorf("passthrough handshakes: %v, want 3", spliced)
	}
	waitOpenConnections(t, metrics)
}

// TestPassthroughShutdownAccepting: Shutdown stops the splicers accepting (new connections
// are refused), waits for the open connections (one reading its hello, one spliced) until its
// context ends, then closes them.
func TestPassthroughShutdownAccepting(t *testing.T) {
	upstreamConns := make(chan net.Conn, 1)
	upstream := serveTCP(t, func(conn net.Conn) {
		upstreamConns <- conn
		_, _ = io.Copy(io.Discard, conn) // until the edge closes
	})
	running, metrics := startPassthroughTo(t, upstream)
	hello := recordClientHello(t, &tls.Config{ServerName: "h.example.com"})

	spliced := dialTCP(t, running.httpsAddress)
	if _, err := spliced.Write(hello); err != nil {
		t.Fatal(err)
	}
	select {
	case <-upstreamConns:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream was never connected")
	}
	helloing := dialTCP(t, running.httpsAddress)
	if _, err := helloing.Write(hello[:10]); err != nil {
		t.Fatal(err)
	}
	// Both are open once the splicer has accepted the second.
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, metrics, "certpilot_edge_open_connections", map[string]string{"listener": "https"}) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the second connection was never accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := running.server.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want its deadline: it waits for open connections", err)
	}
	for name, conn := range map[string]net.Conn{"spliced": spliced, "reading its hello": helloing} {
		if rest := waitClosed(t, conn); len(rest) != 0 {
			t.Errorf("%s connection: read %q, want the end", name, rest)
		}
	}
	if conn, err := net.DialTimeout("tcp", running.httpsAddress, time.Second); err == nil {
		_ = conn.Close()
		t.Error("a connection was accepted after Shutdown")
	}
	waitOpenConnections(t, metrics)
}
