package kube

import (
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
)

func testWriter(t *testing.T) *EventWriter {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	w := NewEventWriter(nil, scheme, "certpilot", "certpilot-host", logr.Discard())
	w.clock = clocktesting.NewFakePassiveClock(time.Date(2026, 12, 7, 1, 2, 3, 4, time.UTC))
	return w
}

func TestEventWriterBuild(t *testing.T) {
	w := testWriter(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "shop", UID: "uid-1"}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "uid-2"}}
	hosts := strings.Repeat("host.example.test, ", 200) // about 3.8 KiB

	long, err := w.build(secret, node, map[string]string{"a": "b"}, corev1.EventTypeWarning, "TooManyNames", "Sync", "names: "+hosts)
	if err != nil {
		t.Fatal(err)
	}
	if len(long.Note) > NoteLimit || !strings.HasPrefix(long.Note, "names: host.example.test") || !strings.HasSuffix(long.Note, "…") {
		t.Errorf("long note: %d bytes, %q…; want at most %d bytes, cut with an ellipsis", len(long.Note), long.Note[:40], NoteLimit)
	}
	if long.Namespace != "team-a" || !strings.HasPrefix(long.Name, "shop.") || long.Regarding.UID != "uid-1" || long.Regarding.Kind != "Secret" {
		t.Errorf("event %s/%s regarding %+v; want it in team-a, named after shop, regarding the Secret", long.Namespace, long.Name, long.Regarding)
	}
	if long.Related == nil || long.Related.UID != "uid-2" || long.Annotations["a"] != "b" {
		t.Errorf("related %+v, annotations %v; want the Node and the annotations", long.Related, long.Annotations)
	}
	if long.ReportingController != "certpilot" || long.ReportingInstance != "certpilot-host" || long.Action != "Sync" ||
		long.Reason != "TooManyNames" || long.Type != corev1.EventTypeWarning || !long.EventTime.Time.Equal(w.clock.Now()) {
		t.Errorf("event %+v; want the writer's controller and instance, the action, reason, type and the clock's time", long)
	}

	// A cluster-scoped object's Events live in the default namespace, as client-go's.
	short, err := w.build(node, nil, nil, corev1.EventTypeNormal, "Short", "Sync", "3 names")
	if err != nil {
		t.Fatal(err)
	}
	if short.Note != "3 names" || short.Namespace != metav1.NamespaceDefault || short.Related != nil {
		t.Errorf("event %q in %q related %v; want the note unchanged, in default, no related object", short.Note, short.Namespace, short.Related)
	}
}

func TestEventWriterQueueFull(t *testing.T) {
	w := testWriter(t) // never started: nothing drains the queue
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "shop"}}
	before := testutil.ToFloat64(eventsDropped.WithLabelValues("QueueFull"))
	for i := range EventQueueSize + 3 {
		w.Eventf(secret, nil, corev1.EventTypeNormal, "Issued", "Issue", "event %d", i)
	}
	if got := len(w.queue); got != EventQueueSize {
		t.Errorf("queued %d Events, want %d", got, EventQueueSize)
	}
	if got := testutil.ToFloat64(eventsDropped.WithLabelValues("QueueFull")) - before; got != 3 {
		t.Errorf("dropped %v Events, want 3", got)
	}
	// Not an object the scheme knows: no Event, counted.
	beforeInvalid := testutil.ToFloat64(eventsDropped.WithLabelValues("Invalid"))
	w.Eventf(&metav1.PartialObjectMetadata{}, nil, corev1.EventTypeNormal, "Issued", "Issue", "x")
	if got := testutil.ToFloat64(eventsDropped.WithLabelValues("Invalid")) - beforeInvalid; got != 1 {
		t.Errorf("dropped %v Events without a reference, want 1", got)
	}
}
