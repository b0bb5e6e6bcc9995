package controllers

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/testenv"
)

// testKube is the package's apiserver and etcd (nil under -short).
var testKube *testenv.Kube

// testScheme knows the built-in and certpilot's types, also under -short.
var testScheme = testenv.NewScheme()

func TestMain(m *testing.M) {
	// Managers log to a per-test buffer (see startIssuerManager); anything logged through the
	// global logger is dropped rather than warned about.
	ctrl.SetLogger(logr.Discard())
	os.Exit(testenv.RunWithKube(m, &testKube))
}

// testTimeout bounds every wait of a test on the reconcilers.
const testTimeout = time.Minute

// issuerManager is a controller-runtime manager running both issuer reconcilers in-process,
// configured as main.go configures the real one.
type issuerManager struct {
	// ClusterResourceNamespace holds the Secrets of ClusterIssuers (created for the test).
	ClusterResourceNamespace string
	// Issuers and ClusterIssuers count the rate-limited requeues (errors returned to
	// controller-runtime) of each controller.
	Issuers, ClusterIssuers *countingRateLimiter
}

// startIssuerManager starts a manager with the Issuer and ClusterIssuer reconcilers and stops it
// when the test ends. Its log is printed when the test fails.
func startIssuerManager(t *testing.T) *issuerManager {
	t.Helper()
	testenv.SkipIfShort(t)
	m := &issuerManager{
		ClusterResourceNamespace: createNamespace(t, "certpilot-system-"),
		Issuers:                  newCountingRateLimiter(),
		ClusterIssuers:           newCountingRateLimiter(),
	}

	logs := &testenv.SyncBuffer{}
	logger := funcr.New(func(prefix, args string) {
		fmt.Fprintf(logs, "%s %s %s\n", time.Now().Format("15:04:05.000"), prefix, args)
	}, funcr.Options{Verbosity: 1})

	mgr, err := ctrl.NewManager(testKube.Config, ctrl.Options{
		Scheme:                 testKube.Scheme,
		Logger:                 logger,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// As in main.go: only certpilot's own Secrets are cached.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: kube.SecretCache()}},
	})
	if err != nil {
		t.Fatalf("Creating the manager: %v", err)
	}
	accounts := &Accounts{
		Reader:                   mgr.GetAPIReader(),
		ClusterResourceNamespace: m.ClusterResourceNamespace,
		UserAgent:                "certpilot-test",
	}
	for _, r := range []struct {
		clusterScoped bool
		limiter       *countingRateLimiter
	}{{false, m.Issuers}, {true, m.ClusterIssuers}} {
		reconciler := &IssuerReconciler{Client: mgr.GetClient(), Accounts: accounts, ClusterScoped: r.clusterScoped}
		// Every test starts its own manager, so controller names repeat within the process.
		options := controller.Options{SkipNameValidation: ptr.To(true), RateLimiter: r.limiter}
		if err := reconciler.SetupWithManager(mgr, options); err != nil {
			t.Fatalf("Setting up the issuer reconciler: %v", err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("The manager stopped with an error: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("The manager did not stop within 30s")
		}
		if t.Failed() {
			t.Logf("Manager log:\n%s", logs.String())
		}
	})
	return m
}

// countingRateLimiter is controller-runtime's default rate limiter, counting how often each
// request was backed off (the reconciler returned an error) and forgotten (it succeeded or
// asked for a RequeueAfter).
type countingRateLimiter struct {
	workqueue.TypedRateLimiter[reconcile.Request]

	mu       sync.Mutex
	backoffs map[reconcile.Request]int
	forgets  map[reconcile.Request]int
}

func newCountingRateLimiter() *countingRateLimiter {
	return &countingRateLimiter{
		TypedRateLimiter: workqueue.DefaultTypedControllerRateLimiter[reconcile.Request](),
		backoffs:         map[reconcile.Request]int{},
		forgets:          map[reconcile.Request]int{},
	}
}

func (l *countingRateLimiter) When(item reconcile.Request) time.Duration {
	l.mu.Lock()
	l.backoffs[item]++
	l.mu.Unlock()
	return l.TypedRateLimiter.When(item)
}

func (l *countingRateLimiter) Forget(item reconcile.Request) {
	l.mu.Lock()
	l.forgets[item]++
	l.mu.Unlock()
	l.TypedRateLimiter.Forget(item)
}

// Backoffs is how often obj's reconcile returned an error.
func (l *countingRateLimiter) Backoffs(obj client.Object) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.backoffs[reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)}]
}

// Forgets is how often obj's reconcile ended without an error.
func (l *countingRateLimiter) Forgets(obj client.Object) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.forgets[reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)}]
}

// createNamespace creates a namespace with a generated name. envtest runs no namespace
// controller, so namespaces are never removed; the generated names keep tests apart.
func createNamespace(t *testing.T, prefix string) string {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}
	if err := testKube.Client.Create(context.Background(), namespace); err != nil {
		t.Fatalf("Creating a namespace: %v", err)
	}
	return namespace.Name
}

// create creates obj and deletes it when the test ends, so that the managers of later tests do
// not reconcile it.
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := testKube.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("Creating %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() {
		if err := testKube.Client.Delete(context.Background(), obj); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("Deleting %T %s: %v", obj, obj.GetName(), err)
		}
	})
}

// pebbleIssuerSpec is an issuer spec for pebble with a new account key Secret name.
func pebbleIssuerSpec(pebble *testenv.Pebble, keySecret string) certpilotv1alpha1.IssuerSpec {
	return certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
		Server:              pebble.DirectoryURL(),
		Email:               "ops@example.com",
		CABundle:            pebble.CABundle,
		PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: keySecret},
	}}
}

// eventually polls check until it returns nil, failing the test after testTimeout.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	if err := testenv.Poll(context.Background(), testTimeout, check); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitForIssuer waits until the issuer, as read from the API, satisfies check; issuer holds the
// last version read.
func waitForIssuer(t *testing.T, issuer certpilotv1alpha1.GenericIssuer, what string, check func() error) {
	t.Helper()
	eventually(t, what, func() error {
		if err := testKube.Client.Get(context.Background(), client.ObjectKeyFromObject(issuer), issuer); err != nil {
			return err
		}
		if err := check(); err != nil {
			return fmt.Errorf("%w; status: %s", err, describeStatus(issuer))
		}
		return nil
	})
}

// reconciledCondition returns a check that the status describes the current generation and
// holds conditionType with the given status and reason.
func reconciledCondition(issuer certpilotv1alpha1.GenericIssuer, conditionType string, want metav1.ConditionStatus, reason string) func() error {
	return func() error {
		status := issuer.GetStatus()
		if status.ObservedGeneration != issuer.GetGeneration() {
			return fmt.Errorf("observedGeneration %d, generation %d", status.ObservedGeneration, issuer.GetGeneration())
		}
		condition := meta.FindStatusCondition(status.Conditions, conditionType)
		if condition == nil || condition.Status != want || condition.Reason != reason ||
			condition.ObservedGeneration != issuer.GetGeneration() {
			return fmt.Errorf("want %s=%s with reason %s for generation %d", conditionType, want, reason, issuer.GetGeneration())
		}
		return nil
	}
}

func describeStatus(issuer certpilotv1alpha1.GenericIssuer) string {
	var b strings.Builder
	status := issuer.GetStatus()
	fmt.Fprintf(&b, "generation %d observedGeneration %d accountURI %q", issuer.GetGeneration(), status.ObservedGeneration, status.AccountURI)
	for _, c := range status.Conditions {
		fmt.Fprintf(&b, "; %s=%s (%s, generation %d): %s", c.Type, c.Status, c.Reason, c.ObservedGeneration, c.Message)
	}
	return b.String()
}

// condition returns the issuer's condition of conditionType, failing the test when it is absent.
func condition(t *testing.T, issuer certpilotv1alpha1.GenericIssuer, conditionType string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(issuer.GetStatus().Conditions, conditionType)
	if c == nil {
		t.Fatalf("%s %s has no %s condition: %s", issuer.Kind(), issuer.GetName(), conditionType, describeStatus(issuer))
	}
	return *c
}

// getSecret reads a Secret straight from the API.
func getSecret(t *testing.T, namespace, name string) *corev1.Secret {
	t.Helper()
	secret := &corev1.Secret{}
	if err := testKube.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, secret); err != nil {
		t.Fatalf("Reading Secret %s/%s: %v", namespace, name, err)
	}
	return secret
}

// kstatusOf computes the kstatus of a typed object, as Flux, Argo CD and kubectl wait see it.
func kstatusOf(t *testing.T, obj client.Object) *status.Result {
	t.Helper()
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatalf("Converting %T to unstructured: %v", obj, err)
	}
	u := &unstructured.Unstructured{Object: content}
	// Objects read through a typed client have no TypeMeta; kstatus looks at the kind.
	gvk, err := apiutil.GVKForObject(obj, testScheme)
	if err != nil {
		t.Fatal(err)
	}
	u.SetGroupVersionKind(gvk)
	result, err := status.Compute(u)
	if err != nil {
		t.Fatalf("kstatus.Compute: %v", err)
	}
	return result
}
