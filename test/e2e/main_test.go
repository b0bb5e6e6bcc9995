// Package e2e runs certpilot end to end as users run it: the built manager and edge binaries
// against a real kube-apiserver and etcd, with Let's Encrypt's test CA Pebble validating
// challenges through the edge.
package e2e

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/testenv"
)

var kube *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }

// binaries builds the manager and the edge once per test run.
func binaries(t *testing.T) (manager, edge string) {
	t.Helper()
	return binariesFor(t)
}

// binariesFor is binaries for tests and benchmarks.
func binariesFor(t testing.TB) (manager, edge string) {
	t.Helper()
	return testenv.Binaries(t)
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
