package solver

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
)

// shardWriteTimeout bounds one write of a shard, whoever waits for it.
const shardWriteTimeout = 30 * time.Second

// shardChange is one caller's part of a shard write.
type shardChange struct {
	// compute returns the keys and owner annotations the caller sets (nil values remove) in
	// view, the shard as it will be with the removals and the earlier changes of the same write.
	// It runs in the writing goroutine, again after a conflict; nil changes nothing (a flush).
	compute func(view *corev1.Secret) (data, annotations map[string]any)
	// done receives the outcome of the write that carried the change.
	done chan error
}

// wait returns the outcome of the write that carried c, or ctx's error when it ends first (the
// change may still be written then: writes are idempotent).
func (c *shardChange) wait(ctx context.Context) error {
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// submit queues compute for the next write of the shard name and, when no write of it is in
// flight, starts one, after the linger of a Put in a burst (the changes queued meanwhile go with
// it); a nil compute (a flush) does not linger. ctx's values (not its end) go with the write.
func (w *ShardWriter) submit(ctx context.Context, name types.NamespacedName, deployment string,
	compute func(*corev1.Secret) (data, annotations map[string]any)) *shardChange {
	change := &shardChange{compute: compute, done: make(chan error, 1)}
	if compute != nil {
		shardPuts.Inc()
	}
	state := w.state(name)
	state.mu.Lock()
	var linger time.Duration
	if compute != nil {
		linger = w.linger(state)
	}
	state.queue = append(state.queue, change)
	start := !state.writing
	state.writing = true
	state.mu.Unlock()
	if start {
		go func() {
			if linger > 0 {
				time.Sleep(linger)
			}
			w.writeQueue(context.WithoutCancel(ctx), name, deployment, state)
		}()
	}
	return change
}

// writeQueue writes the shard until its queue is empty: each write carries every change queued
// while the one before was in flight, and tells each of them its outcome.
func (w *ShardWriter) writeQueue(ctx context.Context, name types.NamespacedName, deployment string, state *shardState) {
	for {
		state.mu.Lock()
		batch := state.queue
		state.queue = nil
		if len(batch) == 0 {
			state.writing = false
			state.mu.Unlock()
			return
		}
		state.mu.Unlock()
		writeCtx, cancel := context.WithTimeout(ctx, shardWriteTimeout)
		err := w.writeBatch(writeCtx, name, deployment, state, batch)
		cancel()
		if splitBatch(err, batch) {
			// The apiserver refused what the write carried (a key it does not accept, a shard
			// grown past its size limit): one Certificate's entry must not fail the others that
			// shared the write, so each change is written alone and only its own write fails.
			shardSplits.Inc()
			for _, change := range batch {
				writeCtx, cancel := context.WithTimeout(ctx, shardWriteTimeout)
				change.done <- w.writeBatch(writeCtx, name, deployment, state, []*shardChange{change})
				cancel()
			}
			continue
		}
		for _, change := range batch {
			change.done <- err
		}
	}
}

// splitBatch reports whether a failed write of batch is written again one change at a time:
// the apiserver refused its content (invalid, too large, a bad request), not the moment (a
// conflict, a timeout, an unavailable apiserver), and more than one Put shared it.
func splitBatch(err error, batch []*shardChange) bool {
	if err == nil || !(apierrors.IsInvalid(err) || apierrors.IsRequestEntityTooLargeError(err) || apierrors.IsBadRequest(err)) {
		return false
	}
	puts := 0
	for _, change := range batch {
		if change.compute != nil {
			puts++
		}
	}
	return puts > 1
}

// writeBatch applies the batch's changes to one shard in one write, creating it when absent,
// with optimistic locking; after a conflict it reads the shard from the API and computes every
// change again (at most three times: a shard written that often by others is a problem to
// report).
func (w *ShardWriter) writeBatch(ctx context.Context, name types.NamespacedName, deployment string,
	state *shardState, batch []*shardChange) error {
	fresh := false
	attempts := 3
	for attempt := 0; ; attempt++ {
		blind, err := w.load(ctx, name, state, fresh)
		if err != nil {
			return err
		}
		if blind {
			attempts++ // a create that finds the shard is a read, not a conflict
		}
		// Queued removals and responses past MaxResponseAge go out with this write; the changes
		// see the shard without them.
		removals := state.takeRemovals()
		data, annotations := cleanups(state.secret, removals, w.now())
		view := withoutKeys(state.secret, data)
		mergeChanges(view, data, annotations, batch)
		if len(data) == 0 && len(annotations) == 0 {
			state.forgetRemovals(removals)
			return nil
		}
		shardWrites.WithLabelValues(carried(batch)).Inc()
		err = w.write(ctx, name, deployment, state, data, annotations)
		if err == nil {
			state.forgetRemovals(removals)
			return nil
		}
		if !(apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err)) || attempt == attempts-1 {
			return fmt.Errorf("writing challenge Secret %s: %w", name, err)
		}
		fresh = true // someone else wrote the shard: read it again
	}
}

// mergeChanges computes the batch's changes in order into data and annotations, applying each
// to view before the next computes, so that a later change sees an earlier one's keys as
// written (two owners asking for one free key in one write: the first gets it, the second
// finds it held).
func mergeChanges(view *corev1.Secret, data, annotations map[string]any, batch []*shardChange) {
	for _, change := range batch {
		if change.compute == nil {
			continue
		}
		changed, changedAnnotations := change.compute(view)
		for key, value := range changed {
			data[key] = value
			if value == nil {
				delete(view.Data, key)
			} else {
				view.Data[key] = value.([]byte)
			}
		}
		for key, value := range changedAnnotations {
			annotations[key] = value
			if value == nil {
				delete(view.Annotations, key)
			} else {
				view.Annotations[key] = value.(string)
			}
		}
	}
}

// carried says what a write of batch carries, for shardWrites: "presents" when any change is
// a Put's, else "removals".
func carried(batch []*shardChange) string {
	for _, change := range batch {
		if change.compute != nil {
			return "presents"
		}
	}
	return "removals"
}

// takeRemovals returns a copy of the queued removals, for one write.
func (s *shardState) takeRemovals() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	removals := make(map[string]string, len(s.removals))
	for key, owner := range s.removals {
		removals[key] = owner
	}
	return removals
}

// forgetRemovals drops the removals a write dealt with; those queued since stay.
func (s *shardState) forgetRemovals(done map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, owner := range done {
		if s.removals[key] == owner {
			delete(s.removals, key)
		}
	}
}

// cleanups are the keys (and owner annotations) a write to secret removes: the removals whose
// owner still holds the key, and responses older than MaxResponseAge at now.
func cleanups(secret *corev1.Secret, removals map[string]string, now time.Time) (data, annotations map[string]any) {
	data, annotations = map[string]any{}, map[string]any{}
	if secret == nil {
		return data, annotations
	}
	for key := range secret.Data {
		annotation := certpilotv1alpha1.ChallengeOwnerAnnotation(key)
		holder, written := parseOwner(secret.Annotations[annotation])
		requester, queued := removals[key]
		if (queued && requester == holder) || (!written.IsZero() && now.Sub(written) > MaxResponseAge) {
			data[key], annotations[annotation] = nil, nil
		}
	}
	return data, annotations
}

// withoutKeys returns a copy of secret (an empty one when nil) as it will be once the keys set
// to nil in data are removed; the changes of a write are applied to it.
func withoutKeys(secret *corev1.Secret, data map[string]any) *corev1.Secret {
	view := &corev1.Secret{}
	if secret != nil {
		view = secret.DeepCopy()
	}
	if view.Data == nil {
		view.Data = map[string][]byte{}
	}
	if view.Annotations == nil {
		view.Annotations = map[string]string{}
	}
	for key := range data {
		delete(view.Data, key)
		delete(view.Annotations, certpilotv1alpha1.ChallengeOwnerAnnotation(key))
	}
	return view
}

// load makes state.secret current enough to write against: the last state this process wrote
// or read, else (the first write, or fresh after a conflict) the API's. A shard this process
// has never seen exist is taken as absent without a read (blind): the write creates it, and a
// shard that exists after all fails that create, which reads it (fresh) and writes again. On
// a new load balancer, and on a fresh install, the first response through each shard then
// costs one request instead of two; after a restart, the first write of each existing shard
// costs one more.
func (w *ShardWriter) load(ctx context.Context, name types.NamespacedName, state *shardState, fresh bool) (blind bool, err error) {
	if !fresh && (state.secret != nil || state.absent) {
		return false, nil
	}
	if !fresh && !w.seen(name) {
		state.secret, state.absent = nil, true
		return true, nil
	}
	secret := &corev1.Secret{}
	err = w.APIReader.Get(ctx, name, secret)
	switch {
	case apierrors.IsNotFound(err):
		state.secret, state.absent = nil, true
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading challenge Secret %s: %w", name, err)
	}
	w.markExisting(name)
	if !kube.IsManaged(secret) {
		return false, notOwned(name)
	}
	state.secret, state.absent = secret, false
	return false, nil
}

// seen reports whether this process has read or written the shard name.
func (w *ShardWriter) seen(name types.NamespacedName) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.existing[name]
}

// markExisting records that the shard name exists.
func (w *ShardWriter) markExisting(name types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.existing == nil {
		w.existing = map[types.NamespacedName]bool{}
	}
	w.existing[name] = true
}

func notOwned(name types.NamespacedName) error {
	return stalledf("ChallengeSecretNotOwned",
		"Secret %s exists and was not created by certpilot; certpilot never overwrites it: delete it or rename the load balancer", name)
}

// write creates the shard or updates it with the resourceVersion last seen.
func (w *ShardWriter) write(ctx context.Context, name types.NamespacedName, deployment string, state *shardState,
	data, annotations map[string]any) error {
	if state.secret == nil {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: name.Namespace, Name: name.Name,
				Labels: map[string]string{
					certpilotv1alpha1.LabelManagedBy:    certpilotv1alpha1.ManagedByValue,
					certpilotv1alpha1.LabelChallenges:   "true",
					certpilotv1alpha1.LabelLoadBalancer: deployment,
				},
				Annotations: map[string]string{},
			},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{},
		}
		for key, value := range data {
			if value != nil {
				secret.Data[key] = value.([]byte)
			}
		}
		for key, value := range annotations {
			if value != nil {
				secret.Annotations[key] = value.(string)
			}
		}
		if err := w.Client.Create(ctx, secret); err != nil {
			if apierrors.IsAlreadyExists(err) {
				w.markExisting(name)
			}
			return err
		}
		w.markExisting(name)
		state.secret, state.absent = secret, false
		return nil
	}
	// An update of the whole shard as last written, with its resourceVersion: the apiserver
	// decodes it as it came (protobuf) and never turns the shard into JSON and back, which a
	// merge patch costs on every write (half of its CPU for a shard of a dozen responses,
	// BenchmarkAPIWrites). Anyone else's write since makes it fail with a conflict.
	updated := state.secret.DeepCopy()
	updated.ManagedFields = nil // the apiserver keeps the live ones
	if updated.Data == nil {
		updated.Data = map[string][]byte{}
	}
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	for key, value := range data {
		if value == nil {
			delete(updated.Data, key)
		} else {
			updated.Data[key] = value.([]byte)
		}
	}
	for key, value := range annotations {
		if value == nil {
			delete(updated.Annotations, key)
		} else {
			updated.Annotations[key] = value.(string)
		}
	}
	if err := w.Client.Update(ctx, updated); err != nil {
		return err
	}
	state.secret = updated
	return nil
}
