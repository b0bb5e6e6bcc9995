package testenv

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"
)

func TestStartPebble(t *testing.T) {
	pebble := StartPebble(t, PebbleOptions{
		Profiles: map[string]PebbleProfile{"short": {Description: "expires during a test", ValidityPeriod: 5 * time.Minute}},
	})

	res, err := pebble.HTTPClient().Get(pebble.DirectoryURL())
	if err != nil {
		t.Fatalf("Getting the directory with CABundle trust: %v", err)
	}
	res.Body.Close()

	roots, err := pebble.Roots()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(roots)
	if block == nil {
		t.Fatalf("Roots() returned no PEM: %q", roots)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatalf("Roots() returned no certificate: %v", err)
	}

	if err := pebble.SetTXT("_acme-challenge.example.test.", "one"); err != nil {
		t.Fatal(err)
	}
	if err := pebble.SetTXT("_acme-challenge.example.test", "two"); err != nil {
		t.Fatal(err)
	}
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, pebble.DNSAddress)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	txt, err := resolver.LookupTXT(ctx, "_acme-challenge.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(txt) != 2 {
		t.Errorf("TXT records = %q, want both values", txt)
	}
	if err := pebble.ClearTXT("_acme-challenge.example.test"); err != nil {
		t.Fatal(err)
	}
	if err := pebble.AddA("app.example.test", "127.0.0.2"); err != nil {
		t.Fatal(err)
	}
	addrs, err := resolver.LookupIPAddr(ctx, "app.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IP.String() != "127.0.0.2" {
		t.Errorf("A records = %v, want 127.0.0.2", addrs)
	}

	if pebble.HTTPPort == 0 || pebble.TLSPort == 0 || pebble.HTTPPort == pebble.TLSPort {
		t.Errorf("HTTPPort %d, TLSPort %d: want two distinct ports", pebble.HTTPPort, pebble.TLSPort)
	}
}

func TestRunPebbleStop(t *testing.T) {
	SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pebble, err := RunPebble(ctx, PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pebble.Stop()
	pebble.Stop() // idempotent
	if conn, err := net.DialTimeout("tcp", pebble.ListenAddress, time.Second); err == nil {
		conn.Close()
		t.Errorf("Pebble still listens on %s after Stop", pebble.ListenAddress)
	}
}

func TestRunPebbleMissingBinaries(t *testing.T) {
	t.Setenv("CERTPILOT_BIN_DIR", t.TempDir())
	_, err := RunPebble(context.Background(), PebbleOptions{})
	if err == nil || !strings.Contains(err.Error(), BuildCommand) {
		t.Fatalf("RunPebble without binaries: %v, want an error naming %q", err, BuildCommand)
	}
}
