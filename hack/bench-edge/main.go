// Command bench-edge is the helper of hack/bench-edge.sh, the benchmark of the edge against
// nginx: it writes the shared ECDSA P-256 certificate, runs the shared upstream, and finds free
// ports. It is not part of any shipped binary.
//
//	bench-edge cert DIR         write DIR/cert.pem and DIR/key.pem
//	bench-edge upstream ADDR    serve "ok\n" over HTTP/1.1 on ADDR until killed
//	bench-edge upstream-tls ADDR DIR
//	                            the same over HTTPS (DIR/cert.pem, DIR/key.pem), and 1 MiB at
//	                            /mib: the TLS server behind the passthrough proxies
//	bench-edge ports N          print N free loopback ports
//	bench-edge handshakes ADDR CONNECTIONS DURATION [KEX]
//	                            new connections per second, each a full TLS 1.3 handshake (no
//	                            session resumption) and one HTTP/1.1 request; prints the rate.
//	                            KEX x25519 (the default) offers only X25519, the key exchange
//	                            both servers can do; go offers Go's defaults, X25519MLKEM768
//	                            first, which the edge negotiates and nginx 1.22 (OpenSSL 3.0)
//	                            cannot
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench-edge:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if (len(args) == 4 || len(args) == 5) && args[0] == "handshakes" {
		var curves []tls.CurveID // Go's defaults
		if len(args) == 4 || args[4] == "x25519" {
			curves = []tls.CurveID{tls.X25519}
		} else if args[4] != "go" {
			return fmt.Errorf("key exchange %q: want x25519 or go", args[4])
		}
		connections, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		duration, err := time.ParseDuration(args[3])
		if err != nil {
			return err
		}
		return handshakes(args[1], connections, duration, curves)
	}
	if len(args) == 3 && args[0] == "upstream-tls" {
		return upstreamTLS(args[1], args[2])
	}
	if len(args) != 2 {
		return fmt.Errorf("usage: bench-edge cert DIR | upstream ADDR | upstream-tls ADDR DIR | ports N | handshakes ADDR CONNECTIONS DURATION")
	}
	switch args[0] {
	case "cert":
		return writeCertificate(args[1])
	case "upstream":
		server := &http.Server{
			Addr: args[1],
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, "ok\n")
			}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		return server.ListenAndServe()
	case "ports":
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		var listeners []net.Listener
		for range n {
			listener, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			listeners = append(listeners, listener)
			fmt.Println(listener.Addr().(*net.TCPAddr).Port)
		}
		for _, listener := range listeners {
			_ = listener.Close()
		}
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// upstreamTLS serves "ok\n" at / and 1 MiB at /mib over HTTPS (HTTP/1.1) on address.
func upstreamTLS(address, dir string) error {
	certificate, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return err
	}
	mib := bytes.Repeat([]byte("certpilot edge benchmark\n"), (1<<20)/25+1)[:1<<20]
	mux := http.NewServeMux()
	mux.HandleFunc("/mib", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(mib)))
		_, _ = w.Write(mib)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	server := &http.Server{
		Addr:              address,
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{certificate}},
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
	}
	return server.ListenAndServeTLS("", "")
}

// writeCertificate writes a self-signed ECDSA P-256 certificate for bench.example.test and
// 127.0.0.1, the one both servers present.
func writeCertificate(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "bench.example.test"},
		DNSNames:              []string{"bench.example.test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// handshakes runs connections workers for duration against address; each worker opens a
// connection, completes a full handshake (a fresh client configuration without a session cache,
// so nothing is resumed), sends one request with "Connection: close" and reads the response to
// the end. It prints completed connections per second and the errors.
func handshakes(address string, connections int, duration time.Duration, curves []tls.CurveID) error {
	var completed, failed atomic.Int64
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	request := []byte("GET / HTTP/1.1\r\nHost: bench.example.test\r\nConnection: close\r\n\r\n")
	for range connections {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := oneConnection(address, request, curves); err != nil {
					failed.Add(1)
					continue
				}
				completed.Add(1)
			}
		})
	}
	wg.Wait()
	fmt.Printf("%.2f %d\n", float64(completed.Load())/duration.Seconds(), failed.Load())
	return nil
}

func oneConnection(address string, request []byte, curves []tls.CurveID) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", address, &tls.Config{
		ServerName:         "bench.example.test",
		InsecureSkipVerify: true, // the benchmark measures the server, not chain verification
		MinVersion:         tls.VersionTLS13,
		CurvePreferences:   curves,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(request); err != nil {
		return err
	}
	response, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(response, []byte("HTTP/1.1 200")) {
		return fmt.Errorf("unexpected response %q", response[:min(len(response), 40)])
	}
	return nil
}
