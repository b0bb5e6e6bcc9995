package testenv

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Eventually calls check until it returns nil or timeout passes, then fails the test with what
// and check's last error.
func Eventually(tb testing.TB, timeout time.Duration, what string, check func() error) {
	tb.Helper()
	if err := Poll(context.Background(), timeout, check); err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

type namespaceRequest struct {
	tb   testing.TB
	base string
}

var namespaces struct {
	sync.Mutex
	runs  map[string]int
	names map[namespaceRequest]string
}

// Namespace returns the namespace a test uses for base: base itself on the first run and
// base-<n> on the n-th run in the same process (go test -count=n). envtest runs no namespace
// controller, so a namespace is never really deleted: every run gets fresh ones, and so do the
// names derived from them (the ClusterIssuer <namespace>-pebble). The same test asking again
// gets the same name.
func Namespace(tb testing.TB, base string) string {
	tb.Helper()
	namespaces.Lock()
	defer namespaces.Unlock()
	if namespaces.runs == nil {
		namespaces.runs, namespaces.names = map[string]int{}, map[namespaceRequest]string{}
	}
	request := namespaceRequest{tb: tb, base: base}
	if name, ok := namespaces.names[request]; ok {
		return name
	}
	namespaces.runs[base]++
	name := base
	if run := namespaces.runs[base]; run > 1 {
		name = fmt.Sprintf("%s-%d", base, run)
	}
	namespaces.names[request] = name
	tb.Cleanup(func() {
		namespaces.Lock()
		defer namespaces.Unlock()
		delete(namespaces.names, request)
	})
	return name
}

// StartTestStack starts Pebble configured by pebbleOptions and the stack (edge, manager,
// ClusterIssuer) with the built binaries in Namespace(t, namespace), and stops both when the
// test ends, logging the processes' output when it failed. opts' binaries and directory are
// filled in, and its namespace when it has none (a test that made its namespace first).
func StartTestStack(t *testing.T, kube *Kube, namespace string, pebbleOptions PebbleOptions, opts StackOptions) *Stack {
	t.Helper()
	managerBinary, edgeBinary := Binaries(t)
	pebble := StartPebble(t, pebbleOptions)
	if opts.Namespace == "" {
		opts.Namespace = Namespace(t, namespace)
	}
	opts.Dir = t.TempDir()
	opts.ManagerBinary, opts.EdgeBinary = managerBinary, edgeBinary
	s, err := StartStack(context.Background(), kube, pebble, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("edge output:\n%s\nmanager output:\n%s", s.Edge.Output(), s.Manager.Output())
			if s.EdgeIPv6 != nil {
				t.Logf("IPv6 edge output:\n%s", s.EdgeIPv6.Output())
			}
		}
	})
	return s
}
