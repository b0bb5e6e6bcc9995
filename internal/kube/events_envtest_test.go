package kube_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/testenv"
)

// env is one apiserver for the package (nil under -short).
var env *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &env)) }

// TestEventWriterWrites checks, on a real apiserver, that every queued Event is written once,
// with what the apiserver's validation of events.k8s.io/v1 asks (a refused Event would be lost),
// including one emitted before the writer started.
func TestEventWriterWrites(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "event-writer-"}}
	if err := env.Client.Create(ctx, namespace); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace.Name, Name: "shop"}}
	if err := env.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	w := kube.NewEventWriter(env.Client, env.Scheme, "certpilot", "certpilot-test", logr.Discard())
	w.Eventf(secret, nil, corev1.EventTypeNormal, "Early", "Issue", "emitted before the writer started")
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	const n = 20
	for i := range n {
		w.Eventf(secret, nil, corev1.EventTypeWarning, "Numbered", "Issue", "event %d", i)
	}
	testenv.Eventually(t, 30*time.Second, "the Events written", func() error {
		var events eventsv1.EventList
		if err := env.Client.List(ctx, &events, client.InNamespace(namespace.Name)); err != nil {
			return err
		}
		notes := map[string]int{}
		for _, event := range events.Items {
			if event.Regarding.UID != secret.UID || event.ReportingController != "certpilot" {
				return fmt.Errorf("event %s regarding %+v from %q; want the Secret's, from certpilot", event.Name, event.Regarding, event.ReportingController)
			}
			notes[event.Note]++
		}
		if len(events.Items) != n+1 || notes["emitted before the writer started"] != 1 || notes[fmt.Sprintf("event %d", n-1)] != 1 {
			return fmt.Errorf("%d Events (%v), want %d, each once", len(events.Items), notes, n+1)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Start returned %v after its context ended, want nil", err)
	}
}
