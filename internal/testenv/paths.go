package testenv

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// BuildCommand is what a developer runs to build every binary the tests need.
const BuildCommand = "make test-binaries"

// RepoRoot returns the repository root: the nearest directory above the working directory that
// holds go.mod. `go test` runs each package in its own directory, so this finds the root from any
// package of the module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// BinDir returns the directory holding the built test binaries: $CERTPILOT_BIN_DIR when set,
// otherwise bin/ in the repository root.
func BinDir() (string, error) {
	if dir := os.Getenv("CERTPILOT_BIN_DIR"); dir != "" {
		return filepath.Abs(dir)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}

// binaryPath returns the path of a built binary under BinDir (for example "k8s/etcd"), or an
// error that names the command that builds it.
func binaryPath(relative string) (string, error) {
	dir, err := BinDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, relative)
	info, err := os.Stat(path)
	if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		return "", fmt.Errorf("test binary %s is missing: run `%s` (it builds the pinned versions into bin/)", path, BuildCommand)
	}
	return path, nil
}

// SkipIfShort skips a test that needs real parts when `go test -short` runs.
func SkipIfShort(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs real parts (envtest, Pebble); skipped under -short")
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddress returns "127.0.0.1:<port>" for a TCP port that was free a moment ago.
func FreeAddress(tb testing.TB) string {
	tb.Helper()
	port, err := FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// FreeUDPAndTCPPort returns a port on 127.0.0.1 that is free for both UDP and TCP, as a DNS
// server needs.
func FreeUDPAndTCPPort() (int, error) {
	for range 50 {
		port, err := FreePort()
		if err != nil {
			return 0, err
		}
		conn, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		conn.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no port free for both UDP and TCP on 127.0.0.1")
}
