// Package reliability runs certpilot through faults (crashes, a second replica, a flaky CA, a
// flaky API) and hostile input, as users run it: the built manager and edge binaries against a
// real kube-apiserver and etcd, with Pebble validating through the edge. The quick part runs in
// plain `go test ./...`; `make test-reliability` runs more rounds (RELIABILITY_ROUNDS).
package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/certpilot/certpilot/internal/testenv"
)

// kube is the apiserver and etcd the package's tests share (started once by TestMain; nil under
// -short); auditLog is its audit log (every request's metadata), which the hostile-input suite
// reads to check where the manager wrote.
var (
	kube     *testenv.Kube
	auditLog string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "certpilot-reliability-audit-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	auditLog = filepath.Join(dir, "audit.log")
	code := testenv.RunWithKubeOptions(m, &kube, testenv.KubeOptions{AuditLogPath: auditLog})
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// rounds is how many times the repeated scenarios run: RELIABILITY_ROUNDS, or quick when unset
// (plain `go test ./...` runs the quick part; `make test-reliability` sets more).
func rounds(t testing.TB, quick int) int {
	t.Helper()
	value := os.Getenv("RELIABILITY_ROUNDS")
	if value == "" {
		return quick
	}
	n, err := strconv.Atoi(value)
	if err != nil || n < 1 {
		t.Fatalf("RELIABILITY_ROUNDS=%q: want a positive number", value)
	}
	return n
}

// long reports whether the long part of the suite was asked for (RELIABILITY_ROUNDS set).
func long() bool { return os.Getenv("RELIABILITY_ROUNDS") != "" }

// startStack starts Pebble configured by pebbleOptions and the stack (edge, manager,
// ClusterIssuer) in testenv.Namespace(t, namespace), and stops both when the test ends, logging the
// processes' output when it failed.
func startStack(t *testing.T, namespace string, pebbleOptions testenv.PebbleOptions, stackOptions testenv.StackOptions) *testenv.Stack {
	t.Helper()
	testenv.SkipIfShort(t)
	return testenv.StartTestStack(t, kube, namespace, pebbleOptions, stackOptions)
}
