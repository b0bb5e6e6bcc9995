package reliability

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// The helpers of the hostile-input and secrets tests. Their names are their own so that they
// sit beside the suite's shared helpers (helpers_test.go) without clashing.

// verbose is the manager's and the edge's most verbose logging: every V(n) line is written, so
// the key scan sees everything they could ever log.
const verbose = "--zap-log-level=10"

// createNamespaces creates each namespace.
func createNamespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if err := kube.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// startHostileStack starts Pebble, the edge and the manager (both at their most verbose) with
// a Ready ClusterIssuer, stopped when the test ends.
func startHostileStack(t *testing.T, base string, pebbleOptions testenv.PebbleOptions, managerArgs ...string) *testenv.Stack {
	t.Helper()
	manager, edge := testenv.Binaries(t)
	pebble := testenv.StartPebble(t, pebbleOptions)
	s, err := testenv.StartStack(context.Background(), kube, pebble, testenv.StackOptions{
		Namespace: testenv.Namespace(t, base), Dir: t.TempDir(), ManagerBinary: manager, EdgeBinary: edge,
		ManagerArgs: append([]string{verbose}, managerArgs...), EdgeArgs: []string{verbose, "--access-log"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("manager output (last 40 kB):\n%s", tail(s.Manager.Output(), 40<<10))
		}
	})
	return s
}

// managerHealthy fails the test when the manager exited or wrote a panic.
func managerHealthy(t *testing.T, s *testenv.Stack) {
	t.Helper()
	if exited, err := s.Manager.Exited(); exited {
		t.Errorf("the manager exited: %v", err)
	}
	for _, p := range []*testenv.Process{s.Manager, s.Edge} {
		if out := p.Output(); strings.Contains(out, "panic:") || strings.Contains(out, "Observed a panic") || strings.Contains(out, "goroutine ") {
			t.Errorf("%s output shows a panic:\n%s", p.Name, tail(out, 8<<10))
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// deleteWhenDone deletes the Certificates and Issuers of namespaces when the test ends, while
// its manager still runs (cleanups run last-registered first): the next test's manager, which
// watches every namespace, then has nothing of this one's to look at.
func deleteWhenDone(t *testing.T, namespaces ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx := context.Background()
		for _, namespace := range namespaces {
			for _, obj := range []client.Object{&certpilotv1alpha1.Certificate{}, &certpilotv1alpha1.Issuer{}} {
				if err := kube.Client.DeleteAllOf(ctx, obj, client.InNamespace(namespace)); err != nil {
					t.Logf("deleting the %T of %s: %v", obj, namespace, err)
				}
			}
		}
	})
}
