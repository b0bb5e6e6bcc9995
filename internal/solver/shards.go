package solver

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// ShardWriter writes challenge responses into the shard Secrets of load balancers (the contract
// in api/v1alpha1/contract.go). One write touches one shard and carries only the keys it
// changes, so its size and its conflict domain do not grow with the number of certificates.
//
// Writes to one shard are serialised in this process and grouped: the Puts (and the removal
// flush) that arrive while a write to the shard is in flight go out together in its next write,
// each caller learning the outcome of its own entries (group commit), so a burst of issuances
// costs far fewer writes than presents. Each write carries the resourceVersion the writer last
// saw (optimistic locking): another replica, or a person, writing the same shard makes the write
// fail with a conflict instead of overwriting, and the shard is read again. The last written
// state of each shard is kept in memory, so a write needs no read first.
//
// In a burst (a Put less than shardBusy after the one before to the same shard), a write that no
// write in flight delays waits Linger for more changes before it goes out: a Certificate's names
// live in different shards, and without the wait two Certificates rarely meet in one write. The
// first Put to each shard in a burst does not wait, so the burst's first issuances are not
// slowed for company that is not there yet.
type ShardWriter struct {
	// Client writes.
	Client client.Client
	// APIReader reads a shard after a conflict, and before the first write of a shard this
	// process has seen exist (a shard it never saw is created without a read: see load). The
	// manager's cache leaves challenge Secrets out: every write of a shard would otherwise come
	// back through its watch, whole, besides the write's own response.
	APIReader client.Reader
	// Clock dates the responses (MaxResponseAge); nil means the real clock.
	Clock clock.PassiveClock
	// Linger is how long a write in a burst waits for more changes; 0 means DefaultShardLinger,
	// a negative value not at all.
	Linger time.Duration
	// MaxHold is how long one Certificate may hold a key another one asks for; 0 means
	// MaxChallengeHold.
	MaxHold time.Duration

	mu     sync.Mutex
	shards map[types.NamespacedName]*shardState
	// swept is when idle shard states were last dropped.
	swept time.Time
	// legacyAbsent holds when the single challenge Secret of earlier versions was last found
	// missing, per load balancer (looked for again after legacyRecheck).
	legacyAbsent map[types.NamespacedName]time.Time
	// existing names the shards this process has read or written: they exist (shards are never
	// deleted by certpilot). Kept when an idle shard's state is dropped; 32 names per load
	// balancer.
	existing map[types.NamespacedName]bool
}

type shardState struct {
	// mu guards removals, flushing, queue and writing; it is never held during a request.
	mu sync.Mutex
	// removals are keys to remove, by the owner that asked: carried by the shard's next write,
	// or written by the flush at most RemovalDelay after they were asked for.
	removals map[string]string
	// flushing is set while a flush of removals is scheduled.
	flushing bool
	// queue holds the changes waiting for the shard's next write.
	queue []*shardChange
	// writing is set while a goroutine writes the shard (writeQueue); only it touches secret
	// and absent.
	writing bool

	// lastPut is when the last Put to the shard came (real time; mu guards it).
	lastPut time.Time

	// used is when the state was last handed out (ShardWriter.mu guards it).
	used time.Time

	// secret is the shard as last written or read; nil when not known yet.
	secret *corev1.Secret
	// absent records that the shard did not exist when last looked at.
	absent bool
}

// RemovalDelay is how long a removal may wait for the shard's next write before it is written
// on its own. During a burst of issuances removals ride along with other Certificates' writes:
// no write of its own per certificate. At 5 s, with a write to each shard every few seconds,
// one removal in three still went alone (0.16 writes per certificate at N=10,000); at 20 s
// almost none does. A response of a finished validation served 20 s longer harms nobody: only
// ACME validators ask for acme-tls/1, and the token is spent.
const RemovalDelay = 20 * time.Second

// MaxResponseAge is how long after its writer started holding its key a response may stay
// before any write to its shard removes it, whoever wrote it: a Certificate deleted mid-order, or a controller that died and never came
// back, leaves nothing behind for longer (tls-alpn-01 challenge certificates expire then too).
const MaxResponseAge = time.Hour

// MaxChallengeHold is how long one Certificate may hold a name's response in a load balancer's
// shards while another Certificate waits for it (ChallengeNameBusy), by default
// (ShardWriter.MaxHold, the manager's --challenge-hold). An order validates through
// a load balancer in seconds; one that holds a name for longer has not progressed (a hostile
// Certificate can list another tenant's name beside a name that never validates, so that its
// order never finishes), and the name goes to the next Certificate that asks for it.
const MaxChallengeHold = 10 * time.Minute

// holdEnded reports whether a hold that started at heldSince has lasted maxHold at now. A
// response without a time (written by an earlier version) is held as before: until its
// challenge certificate expires or its Certificate is gone.
func holdEnded(heldSince, now time.Time, maxHold time.Duration) bool {
	return !heldSince.IsZero() && now.Sub(heldSince) >= maxHold
}

// maxHold is MaxHold, or its default.
func (w *ShardWriter) maxHold() time.Duration {
	if w.MaxHold > 0 {
		return w.MaxHold
	}
	return MaxChallengeHold
}

// holdStart is the time a write stamps on a key: the start of the writer's hold when it holds
// the key already (a new order, a renewed challenge certificate), so that rewriting its own
// response does not extend its hold; else now.
func holdStart(holding bool, heldSince, now time.Time) time.Time {
	if holding && !heldSince.IsZero() && !heldSince.After(now) {
		return heldSince
	}
	return now
}

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

// shardIdle is how long the state of a shard nobody wrote or removed from is kept: the shards
// of a deleted load balancer, or of one no Certificate validates through any more, are not kept
// for the life of the process. A shard used again later is read once from the API.
const shardIdle = 10 * time.Minute

func (w *ShardWriter) state(key types.NamespacedName) *shardState {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if w.shards == nil {
		w.shards = map[types.NamespacedName]*shardState{}
	}
	if now.Sub(w.swept) >= shardIdle {
		w.swept = now
		for name, state := range w.shards {
			if state.idle(now) {
				delete(w.shards, name)
			}
		}
	}
	s, ok := w.shards[key]
	if !ok {
		s = &shardState{}
		w.shards[key] = s
	}
	s.used = now
	return s
}

// idle reports whether nothing is queued, written or waiting to be removed in the shard, and
// its state was last handed out shardIdle before now.
func (s *shardState) idle(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.writing && !s.flushing && len(s.queue) == 0 && len(s.removals) == 0 && now.Sub(s.used) >= shardIdle
}

// Shards reports how many shards' states the writer keeps (for tests).
func (w *ShardWriter) Shards() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.shards)
}

// Put writes entries for owner ("<namespace>/<name>") into the load balancer's shards.
// A value another owner (holder) has held for MaxHold is replaced; before that,
// replaceable decides whether it may be (an expired challenge certificate, a deleted
// Certificate's); when it says no, Put writes nothing
// for that key and returns a *HeldError for it after writing the others. Values equal to what is
// stored are not written. The entries of each shard join that shard's next write (group commit,
// see ShardWriter); Put returns when every shard's write that carried them has ended.
func (w *ShardWriter) Put(ctx context.Context, namespace, deployment, owner string, entries []Entry,
	replaceable func(key, holder string, value []byte) bool) error {
	type part struct {
		change *shardChange
		held   *HeldError // set by the change's compute, read after it is done
	}
	groups := groupByShard(entries, func(e Entry) string { return e.Key })
	parts := make([]*part, 0, len(groups))
	for shard, group := range groups {
		p := &part{}
		name := types.NamespacedName{Namespace: namespace, Name: certpilotv1alpha1.ChallengeShardName(deployment, shard)}
		p.change = w.submit(ctx, name, deployment, func(secret *corev1.Secret) (map[string]any, map[string]any) {
			p.held = nil // computed again after a conflict
			data, annotations := map[string]any{}, map[string]any{}
			for _, entry := range group {
				annotation := certpilotv1alpha1.ChallengeOwnerAnnotation(entry.Key)
				current, exists := secretData(secret, entry.Key)
				holder, heldSince := parseOwner(secretAnnotation(secret, annotation))
				now := w.now()
				if exists && holder != "" && holder != owner && !holdEnded(heldSince, now, w.maxHold()) && !replaceable(entry.Key, holder, current) {
					p.held = &HeldError{Key: entry.Key, Holder: holder}
					continue
				}
				if exists && holder == owner && entry.satisfiedBy(current) {
					continue
				}
				data[entry.Key] = entry.Value // []byte marshals as base64, as the API expects
				annotations[annotation] = ownerStamp(owner, holdStart(exists && holder == owner, heldSince, now))
			}
			return data, annotations
		})
		parts = append(parts, p)
	}
	var held error
	for _, p := range parts {
		if err := p.change.wait(ctx); err != nil {
			return err
		}
		if p.held != nil {
			held = p.held
		}
	}
	return held
}

// DefaultShardLinger is ShardWriter.Linger's default: at a thousand issuances at once it lets
// about one more Certificate's response join a write (each shard sees one or two Puts a second),
// and it adds a tenth of a second to a present that minutes of validation follow.
const DefaultShardLinger = 100 * time.Millisecond

// shardBusy is how close two Puts to one shard must come for the second to be part of a burst.
// At a thousand issuances at once each shard sees a Put every 0.6 s on average, and more than a
// sixth of them come over a second apart: at 3 s nearly all do.
const shardBusy = 3 * time.Second

// linger notes a Put to the shard of state (whose mu the caller holds) and returns how long its
// write may wait for company: Linger when the shard's last Put came less than shardBusy ago,
// else nothing.
func (w *ShardWriter) linger(state *shardState) time.Duration {
	now := time.Now()
	previous := state.lastPut
	state.lastPut = now
	if previous.IsZero() || now.Sub(previous) >= shardBusy || w.Linger < 0 {
		return 0
	}
	if w.Linger == 0 {
		return DefaultShardLinger
	}
	return w.Linger
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

// flush writes a shard's queued removals (when no other write carried them meanwhile); it
// joins the shard's next write like a Put with nothing of its own.
func (w *ShardWriter) flush(name types.NamespacedName, deployment string) {
	ctx, cancel := context.WithTimeout(context.Background(), shardWriteTimeout)
	defer cancel()
	_ = w.submit(ctx, name, deployment, nil).wait(ctx)
	state := w.state(name)
	state.mu.Lock()
	defer state.mu.Unlock()
	if len(state.removals) > 0 {
		// The write failed, or removals came while it was in flight: try again later;
		// MaxResponseAge bounds how long a response can linger anyway.
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
