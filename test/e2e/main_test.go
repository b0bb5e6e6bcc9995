// Package e2e runs certpilot end to end as users run it: the built manager and edge binaries
// against a real kube-apiserver and etcd, with Let's Encrypt's test CA Pebble validating
// challenges through the edge.
package e2e

import (
	"context"
	"fmt"
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

var (
	namespacesMu sync.Mutex
	// namespaceRuns counts, per base name, the tests that asked for it; namespaces holds the
	// name each test got.
	namespaceRuns = map[string]int{}
	namespaces    = map[namespaceRequest]string{}
)

type namespaceRequest struct {
	t    *testing.T
	base string
}

// namespaceFor returns the namespace a test uses for base: base itself on the first run and
// base-<n> on the n-th run in the same process (go test -count=n). envtest runs no namespace
// controller, so a namespace is never really deleted: every run gets fresh ones, and so do the
// names derived from them (the ClusterIssuer <namespace>-pebble). The same test asking again
// gets the same name.
func namespaceFor(t *testing.T, base string) string {
	t.Helper()
	namespacesMu.Lock()
	defer namespacesMu.Unlock()
	request := namespaceRequest{t: t, base: base}
	if name, ok := namespaces[request]; ok {
		return name
	}
	namespaceRuns[base]++
	name := base
	if run := namespaceRuns[base]; run > 1 {
		name = fmt.Sprintf("%s-%d", base, run)
	}
	namespaces[request] = name
	t.Cleanup(func() {
		namespacesMu.Lock()
		defer namespacesMu.Unlock()
		delete(namespaces, request)
	})
	return name
}
