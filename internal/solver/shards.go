package solver

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
)

// ShardWriter writes challenge responses into the shard Secrets of load balancers (the contract
// in api/v1alpha1/contract.go). One write touches one shard and carries only the keys it
// changes, so its size and its conflict domain do not grow with the number of certificates.
//
// Writes to one shard are serialised in this process and each carries the resourceVersion the
// writer last saw (optimistic locking): another replica, or a person, writing the same shard
// makes the write fail with a conflict instead of overwriting, and the shard is read again. The
// last written state of each shard is kept in memory, so a write needs no read first.
type ShardWriter struct {
	// Client writes; its cache serves the first read of a shard.
	Client client.Client
	// APIReader reads a shard again after a conflict (the cache may lag behind).
	APIReader client.Reader
	// Clock dates the responses (MaxResponseAge); nil means the real clock.
	Clock clock.PassiveClock

	mu     sync.Mutex
	shards map[types.NamespacedName]*shardState
}

type shardState struct {
	mu sync.Mutex
	// secret is the shard as last written or read; nil when not known yet.
	secret *corev1.Secret
	// absent records that the shard did not exist when last looked at.
	absent bool
	// removals are keys to remove, by the owner that asked: carried by the shard's next write,
	// or written by the flush at most RemovalDelay after they were asked for.
	removals map[string]string
	// flushing is set while a flush of removals is scheduled.
	flushing bool
}

// RemovalDelay is how long a removal may wait for the shard's next write before it is written
// on its own. During a burst of issuances removals ride along with other Certificates' writes:
// no write of its own per certificate.
const RemovalDelay = 5 * time.Second

// MaxResponseAge is how old a response may get before any write to its shard removes it,
// whoever wrote it: a Certificate deleted mid-order, or a controller that died and never came
// back, leaves nothing behind for longer (tls-alpn-01 challenge certificates expire then too).
const MaxResponseAge = time.Hour

// ownerStamp is the owner annotation's value: "<namespace>/<name>@<unix seconds of the write>".
func ownerStamp(owner string, now time.Time) string {
	return owner + "@" + strconv.FormatInt(now.Unix(), 10)
}

// parseOwner splits an owner annotation into the owner and the time of the write (zero when
// the value carries none).
func parseOwner(value string) (owner string, written time.Time) {
	owner, unix, found := strings.Cut(value, "@")
	if !found {
		return value, time.Time{}
	}
	seconds, err := strconv.ParseInt(unix, 10, 64)
	if err != nil {
		return owner, time.Time{}
	}
	return owner, time.Unix(seconds, 0)
}

// Entry is one response to write.
type Entry struct {
	Key   string
	Value []byte
	// Satisfied, when set, says whether a stored value already answers the challenge (nil:
	// the stored value must equal Value).
	Satisfied func(current []byte) bool
}

func (e Entry) satisfiedBy(current []byte) bool {
	if e.Satisfied != nil {
		return e.Satisfied(current)
	}
	return string(current) == string(e.Value)
}

// HeldError says a key is held by another Certificate.
type HeldError struct {
	Key, Holder string
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s is held by Certificate %s", e.Key, e.Holder)
}

func (w *ShardWriter) state(key types.NamespacedName) *shardState {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.shards == nil {
		w.shards = map[types.NamespacedName]*shardState{}
	}
	s, ok := w.shards[key]
	if !ok {
		s = &shardState{}
		w.shards[key] = s
	}
	return s
}

// Put writes entries for owner ("<namespace>/<name>") into the load balancer's shards.
// replaceable decides whether an existing value of another owner (holder) may be replaced (an
// expired challenge certificate, a deleted Certificate's); when it says no, Put writes nothing for that key and returns a
// *HeldError for it after writing the others. Values equal to what is stored are not written.
func (w *ShardWriter) Put(ctx context.Context, namespace, deployment, owner string, entries []Entry,
	replaceable func(key, holder string, value []byte) bool) error {
	var held error
	for shard, group := range groupByShard(entries, func(e Entry) string { return e.Key }) {
		err := w.update(ctx, namespace, deployment, shard, func(secret *corev1.Secret) (map[string]any, map[string]any) {
			data, annotations := map[string]any{}, map[string]any{}
			for _, entry := range group {
				annotation := certpilotv1alpha1.ChallengeOwnerAnnotation(entry.Key)
				current, exists := secretData(secret, entry.Key)
				holder, _ := parseOwner(secretAnnotation(secret, annotation))
				if exists && holder != "" && holder != owner && !replaceable(entry.Key, holder, current) {
					held = &HeldError{Key: entry.Key, Holder: holder}
					continue
				}
				if exists && holder == owner && entry.satisfiedBy(current) {
					continue
				}
				data[entry.Key] = entry.Value // []byte marshals as base64, as the API expects
				annotations[annotation] = ownerStamp(owner, w.now())
			}
			return data, annotations
		})
		if err != nil {
			return err
		}
	}
	return held
}

// Remove queues the removal of owner's keys from the load balancer's shards and returns them.
// The removals ride along with the next write to each shard, or are written on their own after
// RemovalDelay; keys another owner holds by then are left alone.
func (w *ShardWriter) Remove(ctx context.Context, namespace, deployment, owner string, keys []string) ([]string, error) {
	for shard, group := range groupByShard(keys, func(k string) string { return k }) {
		name := types.NamespacedName{Namespace: namespace, Name: certpilotv1alpha1.ChallengeShardName(deployment, shard)}
		state := w.state(name)
		state.mu.Lock()
		if state.removals == nil {
			state.removals = map[string]string{}
		}
		for _, key := range group {
			state.removals[key] = owner
		}
		schedule := !state.flushing
		state.flushing = true
		state.mu.Unlock()
		if schedule {
			time.AfterFunc(RemovalDelay, func() { w.flush(name, deployment) })
		}
	}
	return keys, nil
}

// flush writes a shard's queued removals (when no other write carried them meanwhile).
func (w *ShardWriter) flush(name types.NamespacedName, deployment string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := w.updateShard(ctx, name, deployment, func(*corev1.Secret) (map[string]any, map[string]any) { return nil, nil })
	state := w.state(name)
	state.mu.Lock()
	defer state.mu.Unlock()
	if err != nil && len(state.removals) > 0 {
		// Try again later; MaxResponseAge bounds how long a response can linger anyway.
		time.AfterFunc(RemovalDelay, func() { w.flush(name, deployment) })
		return
	}
	state.flushing = false
}

// Pending reports how many removals are queued (for tests and metrics).
func (w *ShardWriter) Pending() int {
	w.mu.Lock()
	states := make([]*shardState, 0, len(w.shards))
	for _, state := range w.shards {
		states = append(states, state)
	}
	w.mu.Unlock()
	pending := 0
	for _, state := range states {
		state.mu.Lock()
		pending += len(state.removals)
		state.mu.Unlock()
	}
	return pending
}

func (w *ShardWriter) now() time.Time {
	if w.Clock == nil {
		return time.Now()
	}
	return w.Clock.Now()
}

// PutLegacy writes entries into the single challenge Secret of earlier versions when it
// exists, so that a load balancer still mounting it keeps working through an upgrade; its
// absence (the normal case) costs a cache read.
func (w *ShardWriter) PutLegacy(ctx context.Context, namespace, deployment string, entries []Entry) error {
	secret, err := w.legacy(ctx, namespace, deployment)
	if err != nil || secret == nil {
		return err
	}
	data := map[string]any{}
	for _, entry := range entries {
		if current, ok := secret.Data[entry.Key]; !ok || !entry.satisfiedBy(current) {
			data[entry.Key] = entry.Value
		}
	}
	return w.patchLegacy(ctx, secret, data)
}

// RemoveLegacy removes keys from the single challenge Secret of earlier versions, when it
// exists. Only keys Remove removed from the shards are passed: what this owner wrote.
func (w *ShardWriter) RemoveLegacy(ctx context.Context, namespace, deployment string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	secret, err := w.legacy(ctx, namespace, deployment)
	if err != nil || secret == nil {
		return err
	}
	data := map[string]any{}
	for _, key := range keys {
		if _, ok := secret.Data[key]; ok {
			data[key] = nil
		}
	}
	return w.patchLegacy(ctx, secret, data)
}

func (w *ShardWriter) legacy(ctx context.Context, namespace, deployment string) (*corev1.Secret, error) {
	name := types.NamespacedName{Namespace: namespace, Name: certpilotv1alpha1.ChallengeSecretName(deployment)}
	secret := &corev1.Secret{}
	err := w.Client.Get(ctx, name, secret) // the cache holds certpilot's Secrets
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading challenge Secret %s: %w", name, err)
	}
	if secret.Labels[certpilotv1alpha1.LabelChallenges] != "true" {
		return nil, nil // a certificate Secret or someone else's: not the old challenge Secret
	}
	return secret, nil
}

// patchLegacy adds and removes keys with a JSON merge patch, which touches only the named keys
// (as earlier versions did): other certificates' responses in the same Secret stay.
func (w *ShardWriter) patchLegacy(ctx context.Context, secret *corev1.Secret, data map[string]any) error {
	if len(data) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		return err
	}
	if err := w.Client.Patch(ctx, secret.DeepCopy(), client.RawPatch(types.MergePatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing challenge Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return nil
}

// update applies the change computed by change to one shard, creating it when absent, with
// optimistic locking; after a conflict it reads the shard from the API and computes again (at
// most three times: a shard written that often by others is a problem to report).
func (w *ShardWriter) update(ctx context.Context, namespace, deployment string, shard int,
	change func(*corev1.Secret) (data, annotations map[string]any)) error {
	name := types.NamespacedName{Namespace: namespace, Name: certpilotv1alpha1.ChallengeShardName(deployment, shard)}
	return w.updateShard(ctx, name, deployment, change)
}

func (w *ShardWriter) updateShard(ctx context.Context, name types.NamespacedName, deployment string,
	change func(*corev1.Secret) (data, annotations map[string]any)) error {
	state := w.state(name)
	state.mu.Lock()
	defer state.mu.Unlock()
	fresh := false
	for attempt := 0; ; attempt++ {
		if err := w.load(ctx, name, state, fresh); err != nil {
			return err
		}
		// Queued removals and responses past MaxResponseAge go out with this write; change sees
		// the shard without them.
		data, annotations := w.cleanups(state)
		view := withoutKeys(state.secret, data)
		changed, changedAnnotations := change(view)
		for key, value := range changed {
			data[key] = value
		}
		for key, value := range changedAnnotations {
			annotations[key] = value
		}
		if len(data) == 0 && len(annotations) == 0 {
			state.removals = nil
			return nil
		}
		err := w.write(ctx, name, deployment, state, data, annotations)
		if err == nil {
			state.removals = nil
			return nil
		}
		if !(apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err)) || attempt == 2 {
			return fmt.Errorf("writing challenge Secret %s: %w", name, err)
		}
		fresh = true // someone else wrote the shard: read it again
	}
}

// cleanups are the keys (and owner annotations) a write to the shard removes: the queued
// removals whose owner still holds the key, and responses older than MaxResponseAge.
func (w *ShardWriter) cleanups(state *shardState) (data, annotations map[string]any) {
	data, annotations = map[string]any{}, map[string]any{}
	if state.secret == nil {
		return data, annotations
	}
	now := w.now()
	for key := range state.secret.Data {
		annotation := certpilotv1alpha1.ChallengeOwnerAnnotation(key)
		holder, written := parseOwner(state.secret.Annotations[annotation])
		requester, queued := state.removals[key]
		if (queued && requester == holder) || (!written.IsZero() && now.Sub(written) > MaxResponseAge) {
			data[key], annotations[annotation] = nil, nil
		}
	}
	return data, annotations
}

// withoutKeys returns secret as it will be once the keys set to nil in data are removed.
func withoutKeys(secret *corev1.Secret, data map[string]any) *corev1.Secret {
	if secret == nil || len(data) == 0 {
		return secret
	}
	view := secret.DeepCopy()
	for key := range data {
		delete(view.Data, key)
		delete(view.Annotations, certpilotv1alpha1.ChallengeOwnerAnnotation(key))
	}
	return view
}

// load makes state.secret current enough to write against: the last state this process wrote
// or read, else the cache's copy, else (fresh, or after a conflict) the API's.
func (w *ShardWriter) load(ctx context.Context, name types.NamespacedName, state *shardState, fresh bool) error {
	if !fresh && (state.secret != nil || state.absent) {
		return nil
	}
	var reader client.Reader = w.Client
	if fresh {
		reader = w.APIReader
	}
	secret := &corev1.Secret{}
	err := reader.Get(ctx, name, secret)
	switch {
	case apierrors.IsNotFound(err):
		state.secret, state.absent = nil, true
		return nil
	case err != nil:
		return fmt.Errorf("reading challenge Secret %s: %w", name, err)
	}
	if !kube.IsManaged(secret) {
		return notOwned(name)
	}
	state.secret, state.absent = secret, false
	return nil
}

func notOwned(name types.NamespacedName) error {
	return stalledf("ChallengeSecretNotOwned",
		"Secret %s exists and was not created by certpilot; certpilot never overwrites it: delete it or rename the load balancer", name)
}

// write creates the shard or patches it with the resourceVersion last seen.
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
			return err
		}
		state.secret, state.absent = secret, false
		return nil
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": state.secret.ResourceVersion, "annotations": annotations},
		"data":     data,
	})
	if err != nil {
		return err
	}
	patched := state.secret.DeepCopy()
	if err := w.Client.Patch(ctx, patched, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return err
	}
	state.secret = patched
	return nil
}

func secretData(secret *corev1.Secret, key string) ([]byte, bool) {
	if secret == nil {
		return nil, false
	}
	value, ok := secret.Data[key]
	return value, ok
}

func secretAnnotation(secret *corev1.Secret, key string) string {
	if secret == nil {
		return ""
	}
	return secret.Annotations[key]
}

// groupByShard groups items by the shard of their key, in shard order.
func groupByShard[T any](items []T, key func(T) string) map[int][]T {
	groups := map[int][]T{}
	for _, item := range items {
		shard := certpilotv1alpha1.ChallengeShard(key(item))
		groups[shard] = append(groups[shard], item)
	}
	return groups
}
