package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, chosen below the
// kernel's ephemeral range (ListenFree).
func FreePort() (int, error) {
	listener, err := ListenFree()
	if err != nil {
		return 0, err
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}

// ListenFree listens on a free TCP port of 127.0.0.1 chosen at random below the kernel's
// ephemeral range (net.ipv4.ip_local_port_range). A port handed to another process is free only
// until that process binds it; one chosen inside the ephemeral range, as port 0 chooses, can be
// taken meanwhile by any outgoing connection of any process (a parallel test package's thousands
// of them), which showed as "bind: address already in use". Below the range only a listener that
// names that very port can take it.
func ListenFree() (net.Listener, error) {
	low := ephemeralLow()
	base := max(1024, low-16384)
	for range 64 {
		if low-base < 1024 {
			break
		}
		port := base + rand.IntN(low-base)
		if listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			return listener, nil
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 when unknown).
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 32768
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil {
		return 32768
	}
	return low
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
