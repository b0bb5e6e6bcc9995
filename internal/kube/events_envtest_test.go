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

// TestEventWriterHoldsWhileBusy: with HoldWhile, an Event waits while work is in progress and
// is written when it ends, or once the hold has passed, dated when it was emitted.
func TestEventWriterHoldsWhileBusy(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "event-hold-"}}
	if err := env.Client.Create(ctx, namespace); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace.Name, Name: "shop"}}
	if err := env.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	written := func(reason string) (*eventsv1.Event, error) {
		var events eventsv1.EventList
		if err := env.Client.List(ctx, &events, client.InNamespace(namespace.Name)); err != nil {
			return nil, err
		}
		for i := range events.Items {
			if events.Items[i].Reason == reason {
				return &events.Items[i], nil
			}
		}
		return nil, nil
	}

	busy := kube.NewActivity()
	w := kube.NewEventWriter(env.Client, env.Scheme, "certpilot", "certpilot-test", logr.Discard())
	w.HoldWhile(busy, time.Minute)
	go func() { _ = w.Start(ctx) }()
	busy.Begin()
	w.Eventf(secret, nil, corev1.EventTypeNormal, "Held", "Issue", "held while busy")
	// The Event must not be written while the work goes on (observed for a second).
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if event, err := written("Held"); err != nil || event != nil {
			t.Fatalf("written while busy: %v, %v", event, err)
		}
	}
	busy.End()
	testenv.Eventually(t, 30*time.Second, "the held Event written when the work ended", func() error {
		if event, err := written("Held"); err != nil || event == nil {
			return fmt.Errorf("not written (%v)", err)
		}
		return nil
	})

	// Busy for good: the Event goes out once its hold has passed, dated when it was emitted.
	short := kube.NewEventWriter(env.Client, env.Scheme, "certpilot", "certpilot-test", logr.Discard())
	short.HoldWhile(busy, 2*time.Second)
	go func() { _ = short.Start(ctx) }()
	busy.Begin()
	defer busy.End()
	emitted := time.Now()
	short.Eventf(secret, nil, corev1.EventTypeNormal, "HeldLong", "Issue", "held until the hold passed")
	var event *eventsv1.Event
	testenv.Eventually(t, 30*time.Second, "the Event written after its hold", func() (err error) {
		if event, err = written("HeldLong"); err != nil || event == nil {
			return fmt.Errorf("not written (%v)", err)
		}
		return nil
	})
	if since := time.Since(emitted); since < 2*time.Second {
		t.Errorf("written %s after it was emitted, before its hold of 2s had passed", since)
	}
	if skew := event.EventTime.Sub(emitted); skew < -time.Second || skew > time.Second {
		t.Errorf("eventTime %s, %s from when it was emitted; want the emission time", event.EventTime, skew)
	}
}
