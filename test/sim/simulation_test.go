package sim

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/certpilot/certpilot/controllers"
	"github.com/certpilot/certpilot/internal/pki"
)

// simulation drives a CertificateReconciler as controller-runtime would, on a fake clock: each
// Certificate is reconciled when its RequeueAfter (or, after an error, the rate limiter's
// backoff) comes due; a reconcile that stored a certificate is followed by one more at once,
// as the watch on the owned Secret would cause. The clock moves from one due moment to the
// next, at least step at a time, and the Certificates due by then are reconciled in parallel.
type simulation struct {
	reconciler *controllers.CertificateReconciler
	clock      *clocktesting.FakeClock
	events     *eventCounter
	// step is the smallest clock advance: Certificates due within it are reconciled together.
	step    time.Duration
	workers int
	limiter workqueue.TypedRateLimiter[reconcile.Request]

	mu  sync.Mutex
	due map[types.NamespacedName]time.Time
	// served is the certificate in each Certificate's Secret, as last read.
	served map[types.NamespacedName]*x509.Certificate
	// violations are the moments a served certificate was not valid, by Certificate.
	violations map[types.NamespacedName][]violation
	reconciles int
	errors     int
}

// violation is a stretch of simulated time during which the Secret held a certificate that was
// expired (or not yet valid).
type violation struct {
	reason   string
	from, to time.Time
}

func newSimulation(reconciler *controllers.CertificateReconciler, clock *clocktesting.FakeClock, events *eventCounter, step time.Duration, workers int) *simulation {
	return &simulation{
		reconciler: reconciler, clock: clock, events: events, step: step, workers: workers,
		limiter:    workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, 1000*time.Second),
		due:        map[types.NamespacedName]time.Time{},
		served:     map[types.NamespacedName]*x509.Certificate{},
		violations: map[types.NamespacedName][]violation{},
	}
}

// add schedules a Certificate for a reconcile now (as its creation would).
func (s *simulation) add(key types.NamespacedName) { s.due[key] = s.clock.Now() }

// run advances the clock until end, reconciling what comes due. progress, when set, is called
// at every progressEvery of simulated time (a long run says how far it got).
func (s *simulation) run(ctx context.Context, end time.Time, progress func(now time.Time, reconciles int)) error {
	nextProgress := s.clock.Now().Add(progressEvery)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := s.clock.Now()
		if progress != nil && !now.Before(nextProgress) {
			progress(now, s.reconciles)
			nextProgress = nextProgress.Add(progressEvery)
		}
		next, ok := s.nextDue()
		if !ok || next.After(end) {
			s.checkServed(now, end)
			s.clock.SetTime(end)
			return nil
		}
		if next.After(now) {
			next = maxTime(next, now.Add(s.step))
			if next.After(end) {
				next = end
			}
			s.checkServed(now, next)
			s.clock.SetTime(next)
			now = next
		}
		batch := s.dueBy(now)
		if err := s.reconcileAll(ctx, batch); err != nil {
			return err
		}
	}
}

// progressEvery is how much simulated time passes between two progress reports.
const progressEvery = 30 * 24 * time.Hour

func (s *simulation) nextDue() (time.Time, bool) {
	var next time.Time
	for _, due := range s.due {
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return next, !next.IsZero()
}

// dueBy removes and returns the Certificates due at or before now, sorted.
func (s *simulation) dueBy(now time.Time) []types.NamespacedName {
	var batch []types.NamespacedName
	for key, due := range s.due {
		if !due.After(now) {
			batch = append(batch, key)
			delete(s.due, key)
		}
	}
	sort.Slice(batch, func(i, j int) bool { return batch[i].String() < batch[j].String() })
	return batch
}

// reconcileAll reconciles batch with s.workers in parallel, and schedules each again.
func (s *simulation) reconcileAll(ctx context.Context, batch []types.NamespacedName) error {
	work := make(chan types.NamespacedName)
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for range min(s.workers, len(batch)) {
		wg.Go(func() {
			for key := range work {
				if err := s.reconcileOne(ctx, key); err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
				}
			}
		})
	}
	for _, key := range batch {
		work <- key
	}
	close(work)
	wg.Wait()
	return firstErr
}

func (s *simulation) reconcileOne(ctx context.Context, key types.NamespacedName) error {
	request := reconcile.Request{NamespacedName: key}
	now := s.clock.Now()
	result, err := s.reconciler.Reconcile(ctx, request)
	stored := s.events.takeStored(key)
	var due time.Time
	switch {
	case err != nil:
		due = now.Add(s.limiter.When(request))
	case result.RequeueAfter > 0:
		s.limiter.Forget(request)
		due = now.Add(result.RequeueAfter)
	case result.Requeue: //nolint:staticcheck // the reconciler may still ask for it
		due = now.Add(s.limiter.When(request))
	default:
		s.limiter.Forget(request)
	}
	if stored {
		// The Secret changed: the watch on owned Secrets reconciles the Certificate again.
		due = now
		leaf, readErr := s.readServed(ctx, key)
		if readErr != nil {
			return readErr
		}
		s.mu.Lock()
		s.served[key] = leaf
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reconciles++
	if err != nil {
		s.errors++
	}
	if !due.IsZero() {
		s.due[key] = due
	}
	return nil
}

func (s *simulation) readServed(ctx context.Context, key types.NamespacedName) (*x509.Certificate, error) {
	secret := &corev1.Secret{}
	if err := kube.Client.Get(ctx, key, secret); err != nil {
		return nil, fmt.Errorf("reading the Secret of %s after a stored certificate: %w", key, err)
	}
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		return nil, fmt.Errorf("the Secret of %s holds no certificate: %w", key, err)
	}
	return leaf, nil
}

// checkServed records every served certificate that is not valid at some moment of [from, to]:
// not yet valid at from, or expired before to.
func (s *simulation) checkServed(from, to time.Time) {
	for key, leaf := range s.served {
		switch {
		case from.Before(leaf.NotBefore):
			s.violate(key, "not yet valid", from, minTime(leaf.NotBefore, to))
		case to.After(leaf.NotAfter):
			s.violate(key, "expired", maxTime(from, leaf.NotAfter), to)
		}
	}
}

// violate records a stretch, merged with the previous one when they touch.
func (s *simulation) violate(key types.NamespacedName, reason string, from, to time.Time) {
	list := s.violations[key]
	if n := len(list); n > 0 && list[n-1].reason == reason && !list[n-1].to.Before(from) {
		list[n-1].to = maxTime(list[n-1].to, to)
		return
	}
	s.violations[key] = append(list, violation{reason: reason, from: from, to: to})
}

// verifySecrets compares what the simulation believes is served with every Secret in the API.
func (s *simulation) verifySecrets(ctx context.Context, namespace string) error {
	var secrets corev1.SecretList
	if err := kube.Client.List(ctx, &secrets, client.InNamespace(namespace)); err != nil {
		return err
	}
	byName := map[string]*corev1.Secret{}
	for i := range secrets.Items {
		byName[secrets.Items[i].Name] = &secrets.Items[i]
	}
	var problems []string
	for key, leaf := range s.served {
		secret, ok := byName[key.Name]
		if !ok {
			problems = append(problems, key.Name+": no Secret")
			continue
		}
		actual, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
		if err != nil || actual.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			problems = append(problems, fmt.Sprintf("%s: the Secret holds another certificate than the last one stored (%v)", key.Name, err))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("%d Secrets differ: %s", len(problems), strings.Join(problems, "; "))
	}
	return nil
}

// eventCounter is the reconciler's event recorder: it counts Events by type and reason and
// remembers which Certificates had a certificate stored (Issued or Renewed).
type eventCounter struct {
	mu       sync.Mutex
	byReason map[string]int
	stored   map[types.NamespacedName]bool
}

func newEventCounter() *eventCounter {
	return &eventCounter{byReason: map[string]int{}, stored: map[types.NamespacedName]bool{}}
}

func (e *eventCounter) Eventf(regarding, _ runtime.Object, eventType, reason, _, _ string, _ ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.byReason[eventType+"/"+reason]++
	if obj, ok := regarding.(client.Object); ok && (reason == "Issued" || reason == "Renewed") {
		e.stored[client.ObjectKeyFromObject(obj)] = true
	}
}

func (e *eventCounter) AnnotatedEventf(regarding, related runtime.Object, _ map[string]string, eventType, reason, action, note string, args ...any) {
	e.Eventf(regarding, related, eventType, reason, action, note, args...)
}

// takeStored reports whether a certificate was stored for key since the last call.
func (e *eventCounter) takeStored(key types.NamespacedName) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	stored := e.stored[key]
	delete(e.stored, key)
	return stored
}

func (e *eventCounter) counts() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, v := range e.byReason {
		out[k] = v
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
