package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// The benchmarks measure the edge's per-request, per-connection and per-byte paths in one process
// over loopback, with the least work possible on the other side: a tiny plain HTTP/1.1
// upstream answering "ok\n", and clients that write fixed requests. Client and upstream share
// the CPUs with the edge, so compare runs of the same benchmark (before and after a change,
// interleaved, -count 6), not figures against nginx. docs/bench-edge.md has the figures.
// Run with -short: the package's TestMain starts an apiserver otherwise.
//
// Besides ns/op (wall time, which other work on the machine stretches), each reports cpu-ns/op:
// the CPU time (user and system) the whole process spent per operation, edge, client and
// upstream together, which the machine's load disturbs far less.

// reportCPU starts counting the process's CPU time; the returned function reports it per
// operation. Call it after the setup, and the returned function when the loop has ended.
func reportCPU(b *testing.B) func() {
	start := processCPU(b)
	b.ResetTimer()
	return func() {
		b.StopTimer()
		b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
	}
}

func processCPU(b *testing.B) time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		b.Fatal(err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

// startMiniUpstream serves HTTP/1.1 on loopback: it answers every request (headers only, no
// body expected) with "ok\n", keeping the connection open unless the request says close.
func startMiniUpstream(tb testing.TB) string {
	tb.Helper()
	response := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")
	upstream := serveTCP(tb, func(conn net.Conn) {
		reader := bufio.NewReader(conn)
		for {
			request, err := http.ReadRequest(reader)
			if err != nil {
				return
			}
			if _, err := conn.Write(response); err != nil || request.Close {
				return
			}
		}
	})
	return "http://" + upstream
}

// startBenchServer serves opts on loopback until the benchmark ends and returns the HTTPS
// address.
func startBenchServer(tb testing.TB, opts edge.Options) string {
	tb.Helper()
	listeners, err := edge.Listen("127.0.0.1:0", "127.0.0.1:0", "")
	if err != nil {
		tb.Fatal(err)
	}
	opts.Log = logr.Discard()
	server := edge.NewServer(opts)
	done := make(chan error, 1)
	go func() { done <- server.Serve(listeners) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
		<-done
	})
	return listeners.HTTPS.Addr().String()
}

// startTerminateBench starts a terminating edge for a.example.com in front of a mini upstream.
func startTerminateBench(b *testing.B) string {
	routes := edge.NewRoutes(edge.ModeTerminate)
	if err := routes.Load(routeFile("- {host: a.example.com, upstream: " + startMiniUpstream(b) + "}")); err != nil {
		b.Fatal(err)
	}
	certificates := edge.NewCertificateStore()
	certificates.Replace("bench", []*tls.Certificate{edgetest.SelfSignedCertificate(b, "a.example.com")})
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()
	return startBenchServer(b, edge.Options{Challenges: challenges, Certificates: certificates, Routes: routes})
}

// readOK reads one response and checks that it is the upstream's 200 "ok\n".
func readOK(reader *bufio.Reader) error {
	response, err := http.ReadResponse(reader, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return err
	}
	if response.StatusCode != http.StatusOK || string(body) != "ok\n" {
		return &unexpectedResponse{status: response.StatusCode, body: body}
	}
	return nil
}

type unexpectedResponse struct {
	status int
	body   []byte
}

func (e *unexpectedResponse) Error() string {
	return "unexpected response " + strconv.Itoa(e.status) + ": " + string(e.body)
}

// BenchmarkProxyKeepAlive: proxied requests over keep-alive TLS connections (wrk's
// keep-alive row), one connection per parallel client.
func BenchmarkProxyKeepAlive(b *testing.B) {
	address := startTerminateBench(b)
	config := &tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519}} //nolint:gosec // a benchmark's self-signed certificate
	request := []byte("GET / HTTP/1.1\r\nHost: a.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.SetParallelism(4)
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := tls.Dial("tcp", address, config)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		reader := bufio.NewReader(conn)
		for pb.Next() {
			if _, err := conn.Write(request); err != nil {
				b.Error(err)
				return
			}
			if err := readOK(reader); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkResumedHandshake: a new connection per request, its TLS 1.3 session resumed from a
// ticket (X25519 key share), one proxied request with Connection: close (wrk's resumed row).
func BenchmarkResumedHandshake(b *testing.B) {
	address := startTerminateBench(b)
	request := []byte("GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
	b.SetParallelism(4)
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		config := &tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true, //nolint:gosec // a benchmark's self-signed certificate
			CurvePreferences: []tls.CurveID{tls.X25519}, ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		first := true
		for pb.Next() {
			conn, err := tls.Dial("tcp", address, config)
			if err != nil {
				b.Error(err)
				return
			}
			if !first && !conn.ConnectionState().DidResume {
				b.Error("session not resumed")
			}
			first = false
			_, err = conn.Write(request)
			if err == nil {
				err = readOK(bufio.NewReader(conn))
			}
			abort(conn.NetConn())
			_ = conn.Close()
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPassthroughConnect: passthrough connections, with the TLS work taken out of the
// other ends so that the edge's share shows: the client sends a recorded ClientHello and reads
// until the upstream closes; the upstream (plain TCP) reads the hello, answers 64 bytes and
// closes. Per connection the edge accepts, parses the hello, dials, replays it and splices
// both ways until both ends close.
func BenchmarkPassthroughConnect(b *testing.B) {
	hello := recordClientHello(b, &tls.Config{ServerName: "p.example.com", CurvePreferences: []tls.CurveID{tls.X25519}})
	answer := bytes.Repeat([]byte{'x'}, 64)
	upstream := serveTCP(b, func(conn net.Conn) {
		buffer := make([]byte, len(hello))
		if _, err := io.ReadFull(conn, buffer); err != nil {
			return
		}
		_, _ = conn.Write(answer)
		abort(conn)
	})
	routes := edge.NewRoutes(edge.ModePassthrough)
	if err := routes.Load(routeFile("- {host: p.example.com, upstream: '" + upstream + "'}")); err != nil {
		b.Fatal(err)
	}
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()
	address := startBenchServer(b, edge.Options{Mode: edge.ModePassthrough, Challenges: challenges, Routes: routes})

	b.SetParallelism(4)
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		buffer := make([]byte, 128)
		for pb.Next() {
			conn, err := net.Dial("tcp", address)
			if err != nil {
				b.Error(err)
				return
			}
			_, err = conn.Write(hello)
			n := 0
			for err == nil {
				var read int
				read, err = conn.Read(buffer[n:])
				n += read
			}
			abort(conn)
			_ = conn.Close()
			if err != io.EOF || n != len(answer) {
				b.Errorf("read %d bytes, %v", n, err)
				return
			}
		}
	})
}

// abort makes conn's Close reset the connection: no socket of a loopback connection is left in
// TIME_WAIT, which would run out of ports after a few runs of 25 000 connections each.
func abort(conn net.Conn) {
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
}

// recordClientHello returns the records of the ClientHello that config makes.
func recordClientHello(tb testing.TB, config *tls.Config) []byte {
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		_ = tls.Client(client, config).Handshake()
		_ = client.Close()
	}()
	header := make([]byte, 5)
	if _, err := io.ReadFull(server, header); err != nil {
		tb.Fatal(err)
	}
	record := make([]byte, 5+(int(header[3])<<8|int(header[4])))
	copy(record, header)
	if _, err := io.ReadFull(server, record[5:]); err != nil {
		tb.Fatal(err)
	}
	return record
}

// BenchmarkPassthroughMiB: passthrough throughput (wrk's 1 MiB row), the TLS work again taken
// out of the other ends: over one spliced connection per parallel client, each operation is a
// one-byte request and the upstream's 1 MiB answer. The edge's part is the two splices.
func BenchmarkPassthroughMiB(b *testing.B) {
	const answerSize = 1 << 20
	hello := recordClientHello(b, &tls.Config{ServerName: "p.example.com", CurvePreferences: []tls.CurveID{tls.X25519}})
	answer := bytes.Repeat([]byte{'x'}, answerSize)
	upstream := serveTCP(b, func(conn net.Conn) {
		request := make([]byte, len(hello))
		if _, err := io.ReadFull(conn, request); err != nil {
			return
		}
		for {
			if _, err := io.ReadFull(conn, request[:1]); err != nil {
				return
			}
			if _, err := conn.Write(answer); err != nil {
				return
			}
		}
	})
	routes := edge.NewRoutes(edge.ModePassthrough)
	if err := routes.Load(routeFile("- {host: p.example.com, upstream: '" + upstream + "'}")); err != nil {
		b.Fatal(err)
	}
	challenges := edge.NewChallengeStore()
	challenges.MarkSynced()
	address := startBenchServer(b, edge.Options{Mode: edge.ModePassthrough, Challenges: challenges, Routes: routes})

	b.SetBytes(answerSize)
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := net.Dial("tcp", address)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		if _, err := conn.Write(hello); err != nil {
			b.Error(err)
			return
		}
		buffer := make([]byte, answerSize)
		for pb.Next() {
			if _, err := conn.Write([]byte{'g'}); err != nil {
				b.Error(err)
				return
			}
			if _, err := io.ReadFull(conn, buffer); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
