// Package reliability tries certpilot as an unlucky operator and an attacker would: the built
// manager and edge against a real kube-apiserver, etcd and Pebble (docs/reliability.md).
package reliability

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/certpilot/certpilot/internal/testenv"
)

// kube is the package's apiserver; auditLog is its audit log (every request's metadata), which
// the hostile-input suite reads to check where the manager wrote.
var (
	kube     *testenv.Kube
	auditLog string
)

// TestMain starts one apiserver with an audit log for the package. Temporary: the suite's
// shared TestMain (main_test.go) replaces it; it needs to start Kube with AuditLogPath and set
// auditLog.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "certpilot-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	auditLog = filepath.Join(dir, "audit.log")
	kube, err = testenv.StartKubeWith(testenv.KubeOptions{AuditLogPath: auditLog})
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = kube.Stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
