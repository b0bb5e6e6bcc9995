// Package e2e runs certpilot end to end as users run it: the built manager and edge binaries
// against a real kube-apiserver and etcd, with Let's Encrypt's test CA Pebble validating
// challenges through the edge.
package e2e

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/testenv"
)

var kube *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the manager and the edge once per test run.
func binaries(t *testing.T) (manager, edge string) {
	t.Helper()
	return binariesFor(t)
}

// binariesFor is binaries for tests and benchmarks.
func binariesFor(t testing.TB) (manager, edge string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "certpilot-e2e-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		for pkg, name := range map[string]string{".": "manager", "./cmd/edge": "edge"} {
			if buildErr = testenv.GoBuild(ctx, pkg, filepath.Join(binDir, name)); buildErr != nil {
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	return filepath.Join(binDir, "manager"), filepath.Join(binDir, "edge")
}

// eventually calls check until it returns nil or timeout passes, then fails with its last error.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	if err := testenv.Poll(context.Background(), timeout, check); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
