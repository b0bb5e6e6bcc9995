// Package install tests what users install: the Helm chart and the kustomize configuration are
// rendered with helm's and kustomize's own Go packages (pinned in go.mod, no binaries) and every
// rendered object is sent to a real kube-apiserver as a server-side dry-run apply; the binaries of
// the image are built as the Dockerfile builds them and checked to be static and to start.
package install

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certpilot/certpilot/internal/testenv"
)

var kube *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }

// repoPath returns a path inside the repository.
func repoPath(t *testing.T, elem ...string) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(append([]string{root}, elem...)...)
}

// decodeManifests is testenv.DecodeManifests, failing the test on an error.
func decodeManifests(t *testing.T, source string, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	objects, err := testenv.DecodeManifests(source, manifest)
	if err != nil {
		t.Fatal(err)
	}
	return objects
}

// warnings collects the apiserver's warnings (deprecations, Pod Security violations).
type warnings struct {
	mu       sync.Mutex
	messages []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, message string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.messages = append(w.messages, message)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	messages := w.messages
	w.messages = nil
	return messages
}

// dryRunClient returns a client whose apiserver warnings are collected.
func dryRunClient(t *testing.T) (client.Client, *warnings) {
	t.Helper()
	collected := &warnings{}
	config := rest.CopyConfig(kube.Config)
	config.WarningHandlerWithContext = collected
	c, err := client.New(config, client.Options{Scheme: kube.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c, collected
}

// ensureNamespace creates a namespace (for real: a dry-run creates nothing that later objects
// could live in) that enforces and warns on the restricted Pod Security Standard.
func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
		"pod-security.kubernetes.io/warn":    "restricted",
	}}}
	if err := kube.Client.Create(context.Background(), namespace); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// dryRunApply sends every object to the apiserver as a server-side apply with dryRun=All, as
// `kubectl apply --server-side --dry-run=server` does: admission (schema, CEL, RBAC escalation,
// Pod Security) runs, nothing is stored. It fails the test on any error or apiserver warning.
func dryRunApply(t *testing.T, objects []*unstructured.Unstructured) {
	t.Helper()
	c, collected := dryRunClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, object := range objects {
		what := object.GetKind() + " " + strings.TrimPrefix(object.GetNamespace()+"/"+object.GetName(), "/")
		object = object.DeepCopy()
		if err := c.Patch(ctx, object, client.Apply, client.DryRunAll, client.ForceOwnership,
			client.FieldOwner("certpilot-install-test")); err != nil {
			t.Errorf("server-side dry-run of %s: %v", what, err)
		}
		for _, warning := range collected.take() {
			t.Errorf("server-side dry-run of %s: apiserver warning: %s", what, warning)
		}
	}
}

// objectsByKind indexes objects by "Kind namespace/name" (namespace empty for cluster objects).
func objectsByKind(objects []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	index := map[string]*unstructured.Unstructured{}
	for _, object := range objects {
		index[object.GetKind()+" "+object.GetNamespace()+"/"+object.GetName()] = object
	}
	return index
}

func TestDryRunReportsPodSecurityViolations(t *testing.T) {
	testenv.SkipIfShort(t)
	// The dry-run helper must see what it is meant to catch: a privileged pod template in a
	// restricted namespace draws a Pod Security warning.
	ensureNamespace(t, "install-sanity")
	c, collected := dryRunClient(t)
	deployment := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "privileged", "namespace": "install-sanity"},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "x"}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": "x"}},
				"spec": map[string]any{"containers": []any{map[string]any{
					"name": "x", "image": "x", "securityContext": map[string]any{"privileged": true},
				}}},
			},
		},
	}}
	if err := c.Patch(context.Background(), deployment, client.Apply, client.DryRunAll, client.ForceOwnership,
		client.FieldOwner("certpilot-install-test")); err != nil {
		t.Fatal(err)
	}
	if got := collected.take(); len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), "restricted") {
		t.Errorf("a privileged Deployment in a restricted namespace drew no Pod Security warning: %q", got)
	}
}

func TestDryRunReportsUnknownFields(t *testing.T) {
	testenv.SkipIfShort(t)
	// A misspelled field must not be pruned silently.
	ensureNamespace(t, "install-sanity")
	c, collected := dryRunClient(t)
	service := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"name": "misspelled", "namespace": "install-sanity"},
		"spec":     map[string]any{"portz": []any{map[string]any{"port": int64(80)}}},
	}}
	err := c.Patch(context.Background(), service, client.Apply, client.DryRunAll, client.ForceOwnership,
		client.FieldOwner("certpilot-install-test"))
	if warnings := collected.take(); err == nil && len(warnings) == 0 {
		t.Error("a Service with an unknown field drew neither an error nor a warning")
	}
}
