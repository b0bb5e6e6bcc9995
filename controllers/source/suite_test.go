package source

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/certpilot/certpilot/internal/testenv"
)

// One apiserver for the package, with certpilot's CRDs and the Gateway API's standard CRDs from
// the pinned module, and one manager running both sources (no Certificate controller: these
// tests are about what the sources write).
var (
	kube *testenv.Kube
	// k8s talks to the apiserver directly (kube.Client; its scheme has the Gateway API types).
	k8s client.Client
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	started, err := testenv.StartKube()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	defer func() { _ = started.Stop() }()
	kube = started
	if err := testenv.InstallGatewayAPI(context.Background(), kube.Client); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: installing the Gateway API CRDs: %v\n", err)
		return 1
	}
	k8s = kube.Client
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := startManager(ctx, kube.Scheme); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting the manager: %v\n", err)
		return 1
	}
	return m.Run()
}

func startManager(ctx context.Context, scheme *runtime.Scheme) error {
	logs := io.Discard
	if testing.Verbose() {
		logs = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(logs), zap.UseDevMode(true)))
	mgr, err := ctrl.NewManager(kube.Config, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return err
	}
	options := Options{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("certpilot"),
		Controller: controller.Options{MaxConcurrentReconciles: 2},
	}
	if err := NewIngressReconciler(options).SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	if err := SetupGatewayWhenServed(mgr, options, time.Second); err != nil {
		return err
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "manager stopped: %v\n", err)
		}
	}()
	return nil
}

// namespace creates a namespace with a fresh name, so tests survive -count=2.
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%06d", prefix, rand.IntN(1_000_000))
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	})
	return name
}

// eventually calls check every 250 ms until it returns nil, or fails the test with its last
// error after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	if err := testenv.Poll(context.Background(), timeout, check); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitForEvent waits for an event of that type and reason about obj.
func waitForEvent(t *testing.T, obj client.Object, eventType, reason string) eventsv1.Event {
	t.Helper()
	var found eventsv1.Event
	eventually(t, 30*time.Second, fmt.Sprintf("%s event %s on %s", eventType, reason, obj.GetName()), func() error {
		var events eventsv1.EventList
		if err := k8s.List(context.Background(), &events, client.InNamespace(obj.GetNamespace())); err != nil {
			return err
		}
		var seen []string
		for _, event := range events.Items {
			if event.Regarding.UID != obj.GetUID() {
				continue
			}
			if event.Type == eventType && event.Reason == reason {
				found = event
				return nil
			}
			seen = append(seen, event.Type+"/"+event.Reason)
		}
		return fmt.Errorf("events seen: %v", seen)
	})
	return found
}
