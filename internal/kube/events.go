package kube

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/reference"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/certpilot/certpilot/internal/text"
)

// NoteLimit is the longest Event note the apiserver accepts (events.k8s.io/v1 validation: 1 KiB).
const NoteLimit = 1024

// Queue bounds of the EventWriter.
const (
	// EventQueueSize is how many Events may wait for their write: a burst of issuances emits
	// one each, and past this many the newest are dropped (and counted) rather than held. Held
	// Events (HoldWhile) take at most half of it.
	EventQueueSize = 2048
	// eventWriters write the queue, one Event each at a time.
	eventWriters = 2
	// eventWriteAttempts is how often an Event is sent when the apiserver fails for the moment.
	eventWriteAttempts = 3
	// eventWriteTimeout bounds one write.
	eventWriteTimeout = 10 * time.Second
	// EventHold is how long the manager holds an Event at most while Certificates reconcile
	// (HoldWhile): a burst of a thousand issuances on two cores takes about 20 s.
	EventHold = 30 * time.Second
	// eventHoldRecheck is how often a held Event looks at the queue's length again.
	eventHoldRecheck = time.Second
)

var eventsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "certpilot_events_dropped_total",
	Help: "Kubernetes Events not written, by reason: QueueFull (more waiting than the queue holds), Invalid (refused by the apiserver or no reference to its object), Failed (the apiserver failed every attempt).",
}, []string{"reason"})

func init() { metrics.Registry.MustRegister(eventsDropped) }

// EventWriter is the manager's recorder of Events (events.k8s.io/v1). Events are written from a
// bounded queue by two writers: they tell people what happened, while the writes of an issuance
// (claim, Secret, status) are what makes it happen. With HoldWhile, an Event waits while the
// issuance controller reconciles (at most a hold's time after it was emitted, and never once half
// the queue waits), so in a burst of issuances the Events are written after the burst instead of
// competing with it for the apiserver, and are dated when they were emitted. (client-go's recorder writes each Event from a goroutine of its own, all at
// once, and keeps every Event it wrote for minutes to count repeats; certpilot emits an Event
// once per outcome, not per retry.) A note longer than the apiserver accepts is cut to NoteLimit
// bytes: a refused Event would tell the user nothing at all.
//
// EventWriter is a manager Runnable; Events emitted before it starts wait in the queue.
type EventWriter struct {
	client     client.Client
	scheme     *runtime.Scheme
	controller string
	instance   string
	clock      clock.PassiveClock
	queue      chan *eventsv1.Event
	log        logr.Logger
	// busy, when set, is the work Events wait for, at most hold after they were emitted.
	busy *Activity
	hold time.Duration
}

// NewEventWriter returns an EventWriter that writes with c, names objects with scheme, and
// signs its Events as reportingController and reportingInstance.
func NewEventWriter(c client.Client, scheme *runtime.Scheme, reportingController, reportingInstance string, log logr.Logger) *EventWriter {
	return &EventWriter{
		client: c, scheme: scheme, controller: reportingController, instance: reportingInstance,
		clock: clock.RealClock{}, queue: make(chan *eventsv1.Event, EventQueueSize), log: log,
	}
}

var _ recorder.EventRecorder = &EventWriter{}

// HoldWhile makes Events wait while busy has work in progress, at most hold after they were
// emitted, and not at all while half the queue or more waits. Call it before Start.
func (w *EventWriter) HoldWhile(busy *Activity, hold time.Duration) {
	w.busy, w.hold = busy, hold
}

// Eventf queues an Event about regarding (and related, when not nil).
func (w *EventWriter) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	w.AnnotatedEventf(regarding, related, nil, eventtype, reason, action, note, args...)
}

// AnnotatedEventf queues an Event with annotations.
func (w *EventWriter) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	event, err := w.build(regarding, related, annotations, eventtype, reason, action, fmt.Sprintf(note, args...))
	if err != nil {
		eventsDropped.WithLabelValues("Invalid").Inc()
		w.log.Error(err, "Could not make an Event", "reason", reason)
		return
	}
	select {
	case w.queue <- event:
	default:
		eventsDropped.WithLabelValues("QueueFull").Inc()
	}
}

// build makes the Event: named after its object and the time, in its object's namespace
// (default for cluster-scoped objects), as client-go's recorder names them.
func (w *EventWriter) build(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string) (*eventsv1.Event, error) {
	ref, err := reference.GetReference(w.scheme, regarding)
	if err != nil {
		return nil, fmt.Errorf("referring to the Event's object: %w", err)
	}
	now := w.clock.Now()
	namespace := ref.Namespace
	if namespace == "" {
		namespace = metav1.NamespaceDefault
	}
	event := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("%v.%x", ref.Name, now.UnixNano()),
			Namespace:   namespace,
			Annotations: maps.Clone(annotations),
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: w.controller,
		ReportingInstance:   w.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Note:                text.Cut(note, NoteLimit),
		Type:                eventtype,
	}
	if related != nil {
		if relatedRef, err := reference.GetReference(w.scheme, related); err == nil {
			event.Related = relatedRef
		}
	}
	return event, nil
}

// Start writes queued Events until ctx ends.
func (w *EventWriter) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for range eventWriters {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case event := <-w.queue:
					if !w.wait(ctx, event) {
						return
					}
					w.write(ctx, event)
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// wait holds event while w.busy has work in progress (HoldWhile) and reports whether ctx is
// still alive.
func (w *EventWriter) wait(ctx context.Context, event *eventsv1.Event) bool {
	if w.busy == nil {
		return ctx.Err() == nil
	}
	for len(w.queue) < cap(w.queue)/2 {
		left := w.hold - w.clock.Since(event.EventTime.Time)
		if left <= 0 {
			break
		}
		idle := w.busy.Idle()
		select {
		case <-idle:
			return ctx.Err() == nil
		default:
		}
		timer := time.NewTimer(min(left, eventHoldRecheck))
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-idle:
			timer.Stop()
			return true
		case <-timer.C:
		}
	}
	return ctx.Err() == nil
}

// NeedLeaderElection is false: every replica writes the Events it emits.
func (w *EventWriter) NeedLeaderElection() bool { return false }

// write creates event, trying again a moment later while the apiserver fails for the moment.
func (w *EventWriter) write(ctx context.Context, event *eventsv1.Event) {
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		writeCtx, cancel := context.WithTimeout(ctx, eventWriteTimeout)
		err := w.client.Create(writeCtx, event)
		cancel()
		switch {
		case err == nil || apierrors.IsAlreadyExists(err):
			return
		case ctx.Err() != nil:
			return
		case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err) || apierrors.IsNotFound(err):
			// Refused for what it is (or its namespace is going away): never written.
			eventsDropped.WithLabelValues("Invalid").Inc()
			w.log.V(1).Info("The apiserver refused an Event", "reason", event.Reason, "error", err.Error())
			return
		case attempt == eventWriteAttempts:
			eventsDropped.WithLabelValues("Failed").Inc()
			w.log.V(1).Info("Could not write an Event", "reason", event.Reason, "error", err.Error())
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}
