package solver_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/outcome"
	"github.com/certpilot/certpilot/internal/solver"
	"github.com/certpilot/certpilot/internal/testenv"
)

var kube *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }

var namespaces atomic.Int32

// newNamespace creates a namespace of its own for a test (tests can run twice in one process).
func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("shards-%d", namespaces.Add(1))
	if err := kube.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

func newWriter() *solver.ShardWriter {
	return &solver.ShardWriter{Client: kube.Client, APIReader: kube.Client}
}

func never(string, string, []byte) bool { return false }

func shardOf(t *testing.T, namespace, key string) *corev1.Secret {
	t.Helper()
	secret := &corev1.Secret{}
	name := certpilotv1alpha1.ChallengeShardName("lb", certpilotv1alpha1.ChallengeShard(key))
	if err := kube.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, secret); err != nil {
		t.Fatal(err)
	}
	return secret
}

// TestShardWriterOwnership: a response is written into its key's shard with its writer; another
// Certificate cannot take a held key nor remove it; its writer can.
func TestShardWriterOwnership(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	w := newWriter()
	key := certpilotv1alpha1.TLSALPN01Key("www.example.test")

	if err := w.Put(ctx, namespace, "lb", "team/a", []solver.Entry{{Key: key, Value: []byte("a")}}, never); err != nil {
		t.Fatal(err)
	}
	shard := shardOf(t, namespace, key)
	if string(shard.Data[key]) != "a" || !strings.HasPrefix(shard.Annotations[certpilotv1alpha1.ChallengeOwnerAnnotation(key)], "team/a@") {
		t.Fatalf("shard %s: data %v, annotations %v", shard.Name, shard.Data, shard.Annotations)
	}
	for label, want := range map[string]string{
		certpilotv1alpha1.LabelManagedBy: "certpilot", certpilotv1alpha1.LabelChallenges: "true", certpilotv1alpha1.LabelLoadBalancer: "lb",
	} {
		if shard.Labels[label] != want {
			t.Errorf("label %s = %q, want %q", label, shard.Labels[label], want)
		}
	}

	// Another Certificate: held, nothing written.
	var held *solver.HeldError
	err := w.Put(ctx, namespace, "lb", "team/b", []solver.Entry{{Key: key, Value: []byte("b")}}, never)
	if !errors.As(err, &held) || held.Holder != "team/a" {
		t.Fatalf("Put by another Certificate: %v, want held by team/a", err)
	}
	// Its removal is queued but, as the key is not its own, carries nothing.
	if _, err := w.Remove(ctx, namespace, "lb", "team/b", []string{key}); err != nil {
		t.Fatal(err)
	}
	if err := w.Put(ctx, namespace, "lb", "team/b", nil, never); err != nil {
		t.Fatal(err)
	}
	if got := shardOf(t, namespace, key); string(got.Data[key]) != "a" || got.ResourceVersion != shard.ResourceVersion {
		t.Errorf("the held key changed: %q (resourceVersion %s -> %s)", got.Data[key], shard.ResourceVersion, got.ResourceVersion)
	}

	// The writer releases it: the removal waits for the shard's next write, which the other
	// Certificate's takeover is.
	if removed, err := w.Remove(ctx, namespace, "lb", "team/a", []string{key}); err != nil || len(removed) != 1 {
		t.Fatalf("Remove by the writer: %v (%v)", removed, err)
	}
	if w.Pending() != 1 {
		t.Errorf("%d removals queued, want 1", w.Pending())
	}
	if err := w.Put(ctx, namespace, "lb", "team/b", []solver.Entry{{Key: key, Value: []byte("b")}}, never); err != nil {
		t.Fatalf("Put after release: %v", err)
	}
	got := shardOf(t, namespace, key)
	if owner := got.Annotations[certpilotv1alpha1.ChallengeOwnerAnnotation(key)]; string(got.Data[key]) != "b" || !strings.HasPrefix(owner, "team/b@") {
		t.Errorf("after release: data %q, owner %q", got.Data[key], owner)
	}
	if w.Pending() != 0 {
		t.Errorf("%d removals still queued after the write that carried them", w.Pending())
	}

	// A removal with no write to carry it is written on its own, within RemovalDelay.
	if _, err := w.Remove(ctx, namespace, "lb", "team/b", []string{key}); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Poll(ctx, 4*solver.RemovalDelay, func() error {
		if got := shardOf(t, namespace, key); len(got.Data) != 0 || len(got.Annotations) != 0 {
			return fmt.Errorf("shard data %v, annotations %v", got.Data, got.Annotations)
		}
		return nil
	}); err != nil {
		t.Errorf("the removal was not flushed: %v", err)
	}
}

// TestShardWriterSweepsOldResponses: a response older than MaxResponseAge (its Certificate was
// deleted mid-order, or its controller died) goes out with the next write to its shard.
func TestShardWriterSweepsOldResponses(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	clock := clocktesting.NewFakeClock(time.Now())
	w := &solver.ShardWriter{Client: kube.Client, APIReader: kube.Client, Clock: clock}
	old := certpilotv1alpha1.HTTP01Key("old-token")
	var fresh string
	for i := range 1000 {
		candidate := certpilotv1alpha1.HTTP01Key(fmt.Sprintf("fresh-%d", i))
		if certpilotv1alpha1.ChallengeShard(candidate) == certpilotv1alpha1.ChallengeShard(old) {
			fresh = candidate
			break
		}
	}
	if err := w.Put(ctx, namespace, "lb", "team/gone", []solver.Entry{{Key: old, Value: []byte("x")}}, never); err != nil {
		t.Fatal(err)
	}
	clock.Step(solver.MaxResponseAge + time.Minute)
	if err := w.Put(ctx, namespace, "lb", "team/a", []solver.Entry{{Key: fresh, Value: []byte("y")}}, never); err != nil {
		t.Fatal(err)
	}
	got := shardOf(t, namespace, old)
	if _, ok := got.Data[old]; ok {
		t.Errorf("a response older than %s was not swept: %v", solver.MaxResponseAge, got.Data)
	}
	if string(got.Data[fresh]) != "y" {
		t.Errorf("the new response is missing: %v", got.Data)
	}
}

// TestShardWriterConflicts: another writer (another replica, a person) changing a shard between
// two writes is neither overwritten nor lost; two writers racing for one free name never both
// get it.
func TestShardWriterConflicts(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	w := newWriter()
	key := certpilotv1alpha1.HTTP01Key("token-1")
	if err := w.Put(ctx, namespace, "lb", "team/a", []solver.Entry{{Key: key, Value: []byte("one")}}, never); err != nil {
		t.Fatal(err)
	}
	// Someone else adds a key to the same shard behind the writer's back.
	other := newWriter()
	var sameShard string
	for i := range 1000 {
		candidate := certpilotv1alpha1.HTTP01Key(fmt.Sprintf("other-%d", i))
		if certpilotv1alpha1.ChallengeShard(candidate) == certpilotv1alpha1.ChallengeShard(key) {
			sameShard = candidate
			break
		}
	}
	if err := other.Put(ctx, namespace, "lb", "team/c", []solver.Entry{{Key: sameShard, Value: []byte("c")}}, never); err != nil {
		t.Fatal(err)
	}
	// The first writer's state is stale: its next write conflicts, reads again, and keeps both.
	if err := w.Put(ctx, namespace, "lb", "team/a", []solver.Entry{{Key: key, Value: []byte("two")}}, never); err != nil {
		t.Fatalf("Put after a concurrent write: %v", err)
	}
	shard := shardOf(t, namespace, key)
	if string(shard.Data[key]) != "two" || string(shard.Data[sameShard]) != "c" {
		t.Errorf("shard data %v: a write was lost", shard.Data)
	}

	// Ten writers (as ten replicas would) race for one free tls-alpn-01 name: one holds it.
	name := certpilotv1alpha1.TLSALPN01Key("race.example.test")
	var wg sync.WaitGroup
	var won atomic.Int32
	for i := range 10 {
		wg.Go(func() {
			err := newWriter().Put(ctx, namespace, "lb", fmt.Sprintf("team/r%d", i), []solver.Entry{{Key: name, Value: fmt.Appendf(nil, "r%d", i)}}, never)
			var held *solver.HeldError
			switch {
			case err == nil:
				won.Add(1)
			case errors.As(err, &held):
			default:
				t.Errorf("writer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Errorf("%d writers believe they hold the name, want exactly 1", won.Load())
	}
	shard = shardOf(t, namespace, name)
	owner := shard.Annotations[certpilotv1alpha1.ChallengeOwnerAnnotation(name)]
	if want := "team/" + string(shard.Data[name]) + "@"; !strings.HasPrefix(owner, want) {
		t.Errorf("the stored value %q is not its recorded owner's (%q)", shard.Data[name], owner)
	}
}

// TestShardWriterNeverOverwritesForeignSecrets: a Secret named like a shard that certpilot did
// not create stalls the writer; it is left as it is.
func TestShardWriterNeverOverwritesForeignSecrets(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	key := certpilotv1alpha1.HTTP01Key("token")
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace,
		Name: certpilotv1alpha1.ChallengeShardName("lb", certpilotv1alpha1.ChallengeShard(key))},
		Data: map[string][]byte{"theirs": []byte("x")}}
	if err := kube.Client.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	err := newWriter().Put(ctx, namespace, "lb", "team/a", []solver.Entry{{Key: key, Value: []byte("v")}}, never)
	if s, ok := outcome.AsStalled(err); !ok || s.Reason != "ChallengeSecretNotOwned" {
		t.Fatalf("Put into a foreign Secret: %v, want Stalled ChallengeSecretNotOwned", err)
	}
	if got := shardOf(t, namespace, key); got.ResourceVersion != foreign.ResourceVersion {
		t.Errorf("the foreign Secret was written")
	}
}

// countingClient counts the writes (create, update and patch) that reach the apiserver and holds each
// for delay, so that Puts arriving meanwhile find a write in flight.
type countingClient struct {
	client.Client
	delay  time.Duration
	writes atomic.Int32
}

func (c *countingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.writes.Add(1)
	time.Sleep(c.delay)
	return c.Client.Create(ctx, obj, opts...)
}

func (c *countingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.writes.Add(1)
	time.Sleep(c.delay)
	return c.Client.Update(ctx, obj, opts...)
}

func (c *countingClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	c.writes.Add(1)
	time.Sleep(c.delay)
	return c.Client.Patch(ctx, obj, patch, opts...)
}

// sameShardKeys returns n tls-alpn-01 keys that all live in one shard.
func sameShardKeys(n int) []string {
	var keys []string
	shard := -1
	for i := 0; len(keys) < n; i++ {
		key := certpilotv1alpha1.TLSALPN01Key(fmt.Sprintf("n%d.example.test", i))
		if shard == -1 {
			shard = certpilotv1alpha1.ChallengeShard(key)
		}
		if certpilotv1alpha1.ChallengeShard(key) == shard {
			keys = append(keys, key)
		}
	}
	return keys
}

// TestShardWriterGroupsConcurrentPuts: Puts to one shard that arrive while a write to it is in
// flight go out together in the next write; every entry lands with its owner, and a key two
// Certificates ask for in one write goes to one of them, the other learning it is held.
func TestShardWriterGroupsConcurrentPuts(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	counting := &countingClient{Client: kube.Client, delay: 200 * time.Millisecond}
	w := &solver.ShardWriter{Client: counting, APIReader: kube.Client}
	const puts = 20
	keys := sameShardKeys(puts + 1)
	contested := keys[puts] // asked for by two Certificates
	keys = keys[:puts]
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		held  atomic.Int32
		won   sync.Map // contested key: owner whose Put succeeded
	)
	for i := range puts {
		wg.Go(func() {
			<-start
			owner := fmt.Sprintf("team/c%d", i)
			err := w.Put(ctx, namespace, "lb", owner, []solver.Entry{{Key: keys[i], Value: []byte(owner)}}, never)
			if err != nil {
				t.Errorf("Put %d: %v", i, err)
			}
		})
	}
	for _, owner := range []string{"team/x", "team/y"} {
		wg.Go(func() {
			<-start
			err := w.Put(ctx, namespace, "lb", owner, []solver.Entry{{Key: contested, Value: []byte(owner)}}, never)
			var heldError *solver.HeldError
			switch {
			case err == nil:
				won.Store(owner, true)
			case errors.As(err, &heldError):
				held.Add(1)
			default:
				t.Errorf("Put by %s: %v", owner, err)
			}
		})
	}
	close(start)
	wg.Wait()

	writes := int(counting.writes.Load())
	t.Logf("%d Puts to one shard took %d writes", puts+2, writes)
	if writes >= puts {
		t.Errorf("%d Puts to one shard took %d writes, want fewer than %d", puts+2, writes, puts)
	}
	shard := shardOf(t, namespace, keys[0])
	for i, key := range keys {
		owner := fmt.Sprintf("team/c%d", i)
		if string(shard.Data[key]) != owner || !strings.HasPrefix(shard.Annotations[certpilotv1alpha1.ChallengeOwnerAnnotation(key)], owner+"@") {
			t.Errorf("key %s: value %q, owner %q, want %s's", key, shard.Data[key], shard.Annotations[certpilotv1alpha1.ChallengeOwnerAnnotation(key)], owner)
		}
	}
	winners := 0
	won.Range(func(owner, _ any) bool {
		winners++
		if got := string(shard.Data[contested]); got != owner.(string) {
			t.Errorf("the contested key holds %q, but %s's Put succeeded", got, owner)
		}
		return true
	})
	if winners != 1 || held.Load() != 1 {
		t.Errorf("contested key: %d Puts succeeded and %d were told it is held, want 1 and 1", winners, held.Load())
	}
}

// TestShardWriterLingersInABurst: in a burst (a Put shortly after another), a write waits
// Linger for company, so a Put that comes a moment later shares it; the first Put of all is
// written at once.
func TestShardWriterLingersInABurst(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	counting := &countingClient{Client: kube.Client}
	w := &solver.ShardWriter{Client: counting, APIReader: kube.Client, Linger: 2 * time.Second}
	keys := sameShardKeys(3)
	put := func(i int) error {
		owner := fmt.Sprintf("team/c%d", i)
		return w.Put(ctx, namespace, "lb", owner, []solver.Entry{{Key: keys[i], Value: []byte(owner)}}, never)
	}
	start := time.Now()
	if err := put(0); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited >= time.Second {
		t.Errorf("the first Put waited %s: nothing came before it, it should not linger", waited)
	}
	first := counting.writes.Load()

	var wg sync.WaitGroup
	wg.Go(func() {
		if err := put(1); err != nil {
			t.Error(err)
		}
	})
	// The second Put of the burst comes while the first one's write lingers (2 s).
	time.Sleep(100 * time.Millisecond)
	if err := put(2); err != nil {
		t.Error(err)
	}
	wg.Wait()
	if writes := counting.writes.Load() - first; writes != 1 {
		t.Errorf("two Puts 100 ms apart in a burst took %d writes, want 1", writes)
	}
	shard := shardOf(t, namespace, keys[0])
	for i, key := range keys {
		if owner := fmt.Sprintf("team/c%d", i); string(shard.Data[key]) != owner {
			t.Errorf("key %s holds %q, want %s", key, shard.Data[key], owner)
		}
	}
}

// TestShardWriterReleasesAHeldName: a Certificate that holds a name's response without finishing
// (its order never validates) keeps it from another Certificate for MaxChallengeHold from its
// first write, rewrites of its own (a new order) included; then the other takes it, and the
// first finds it held.
func TestShardWriterReleasesAHeldName(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	clock := clocktesting.NewFakeClock(time.Now())
	w := &solver.ShardWriter{Client: kube.Client, APIReader: kube.Client, Clock: clock}
	key := certpilotv1alpha1.TLSALPN01Key("shop.victim.example")

	if err := w.Put(ctx, namespace, "lb", "hostile/holder", []solver.Entry{{Key: key, Value: []byte("first-order")}}, never); err != nil {
		t.Fatal(err)
	}
	clock.Step(solver.MaxChallengeHold / 2)
	// A new order of the holder rewrites its response: the hold does not start again.
	if err := w.Put(ctx, namespace, "lb", "hostile/holder", []solver.Entry{{Key: key, Value: []byte("second-order")}}, never); err != nil {
		t.Fatal(err)
	}
	var held *solver.HeldError
	if err := w.Put(ctx, namespace, "lb", "victim/www", []solver.Entry{{Key: key, Value: []byte("victim")}}, never); !errors.As(err, &held) {
		t.Fatalf("Put by another Certificate within the hold: %v, want held", err)
	}
	clock.Step(solver.MaxChallengeHold / 2)
	if err := w.Put(ctx, namespace, "lb", "victim/www", []solver.Entry{{Key: key, Value: []byte("victim")}}, never); err != nil {
		t.Fatalf("Put by another Certificate after %v: %v, want the name released", solver.MaxChallengeHold, err)
	}
	got := shardOf(t, namespace, key)
	if owner := got.Annotations[certpilotv1alpha1.ChallengeOwnerAnnotation(key)]; string(got.Data[key]) != "victim" || !strings.HasPrefix(owner, "victim/www@") {
		t.Errorf("after the hold: data %q, owner %q", got.Data[key], owner)
	}
	held = nil
	if err := w.Put(ctx, namespace, "lb", "hostile/holder", []solver.Entry{{Key: key, Value: []byte("third-order")}}, never); !errors.As(err, &held) || held.Holder != "victim/www" {
		t.Errorf("the former holder's Put: %v, want held by victim/www", err)
	}
}

// TestShardWriterSplitsARefusedWrite: two Certificates' Puts share one write and the apiserver
// refuses it for one of them (a key it does not accept): the other's response is written all
// the same, and only the Put with the bad key fails.
func TestShardWriterSplitsARefusedWrite(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	counting := &countingClient{Client: kube.Client, delay: 500 * time.Millisecond}
	w := &solver.ShardWriter{Client: counting, APIReader: kube.Client}
	keys := sameShardKeys(2)
	bad := ""
	for i := 0; bad == ""; i++ {
		if candidate := fmt.Sprintf("bad key %d!", i); certpilotv1alpha1.ChallengeShard(candidate) == certpilotv1alpha1.ChallengeShard(keys[0]) {
			bad = candidate
		}
	}
	// A first Put's write is in flight while the two others queue for the next one.
	first := make(chan error, 1)
	go func() {
		first <- w.Put(ctx, namespace, "lb", "team/first", []solver.Entry{{Key: keys[0], Value: []byte("first")}}, never)
	}()
	if err := testenv.Poll(ctx, 10*time.Second, func() error {
		if counting.writes.Load() == 0 {
			return fmt.Errorf("no write in flight yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var badErr, goodErr error
	wg.Go(func() {
		badErr = w.Put(ctx, namespace, "lb", "team/bad", []solver.Entry{{Key: bad, Value: []byte("bad")}}, never)
	})
	wg.Go(func() {
		goodErr = w.Put(ctx, namespace, "lb", "team/good", []solver.Entry{{Key: keys[1], Value: []byte("good")}}, never)
	})
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first Put: %v", err)
	}
	if !apierrors.IsInvalid(badErr) {
		t.Errorf("Put with a key the apiserver refuses: %v, want Invalid", badErr)
	}
	if goodErr != nil {
		t.Errorf("Put that shared the refused write: %v, want written", goodErr)
	}
	shard := shardOf(t, namespace, keys[1])
	if string(shard.Data[keys[1]]) != "good" || string(shard.Data[keys[0]]) != "first" {
		t.Errorf("shard data %v, want the first and the good response", shard.Data)
	}
	// 1 (first) + 1 (the shared write, refused) + 2 (each alone): fewer means the two Puts did
	// not share a write, and the test proved nothing.
	if n := counting.writes.Load(); n != 4 {
		t.Errorf("%d writes, want 4: the first, the shared one refused, then each Put alone", n)
	}
}

// TestShardWriterForgetsIdleShards: the writer does not keep the state of a load balancer's
// shards nobody used for a while (a deleted load balancer's); a shard used again afterwards is
// read from the API and written as before.
func TestShardWriterForgetsIdleShards(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	clock := clocktesting.NewFakeClock(time.Now())
	w := &solver.ShardWriter{Client: kube.Client, APIReader: kube.Client, Clock: clock}
	key := certpilotv1alpha1.HTTP01Key("token-1")
	if err := w.Put(ctx, namespace, "gone", "team/a", []solver.Entry{{Key: key, Value: []byte("a")}}, never); err != nil {
		t.Fatal(err)
	}
	if n := w.Shards(); n != 1 {
		t.Fatalf("%d shard states after one Put, want 1", n)
	}
	clock.Step(30 * time.Minute)
	if err := w.Put(ctx, namespace, "lb", "team/b", []solver.Entry{{Key: key, Value: []byte("b")}}, never); err != nil {
		t.Fatal(err)
	}
	if n := w.Shards(); n != 1 {
		t.Errorf("%d shard states after the first load balancer was idle for 30 minutes, want 1 (the second's)", n)
	}
	// The forgotten shard is read again and written at its current resourceVersion.
	if err := w.Put(ctx, namespace, "gone", "team/a", []solver.Entry{{Key: key, Value: []byte("a2")}}, never); err != nil {
		t.Fatalf("Put into a forgotten shard: %v", err)
	}
	secret := &corev1.Secret{}
	name := certpilotv1alpha1.ChallengeShardName("gone", certpilotv1alpha1.ChallengeShard(key))
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret); err != nil {
		t.Fatal(err)
	}
	if string(secret.Data[key]) != "a2" {
		t.Errorf("the forgotten shard holds %q, want a2", secret.Data[key])
	}
}

// countingReader counts the reads that reach the apiserver.
type countingReader struct {
	client.Reader
	reads atomic.Int32
}

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.reads.Add(1)
	return r.Reader.Get(ctx, key, obj, opts...)
}

// TestShardWriterCreatesUnseenShardsWithoutARead: the first write of a shard this process has
// never seen is a create with no read before it; when the shard exists after all (another
// replica wrote it), the failed create reads it and the write lands beside what it holds; a
// shard known to exist is read before its first write again, even after its state was dropped.
func TestShardWriterCreatesUnseenShardsWithoutARead(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	keys := sameShardKeys(3)

	firstWrites := &countingClient{Client: kube.Client}
	firstReads := &countingReader{Reader: kube.Client}
	first := &solver.ShardWriter{Client: firstWrites, APIReader: firstReads}
	if err := first.Put(ctx, namespace, "lb", "team/a", []solver.Entry{{Key: keys[0], Value: []byte("a")}}, never); err != nil {
		t.Fatal(err)
	}
	if reads, writes := firstReads.reads.Load(), firstWrites.writes.Load(); reads != 0 || writes != 1 {
		t.Errorf("a new shard took %d reads and %d writes, want 0 and 1", reads, writes)
	}

	clock := clocktesting.NewFakeClock(time.Now())
	secondWrites := &countingClient{Client: kube.Client}
	secondReads := &countingReader{Reader: kube.Client}
	second := &solver.ShardWriter{Client: secondWrites, APIReader: secondReads, Clock: clock}
	if err := second.Put(ctx, namespace, "lb", "team/b", []solver.Entry{{Key: keys[1], Value: []byte("b")}}, never); err != nil {
		t.Fatalf("Put into a shard another writer created: %v", err)
	}
	if reads, writes := secondReads.reads.Load(), secondWrites.writes.Load(); reads != 1 || writes != 2 {
		t.Errorf("an existing shard unseen by its writer took %d reads and %d writes, want 1 and 2 (a failed create, an update)", reads, writes)
	}
	shard := shardOf(t, namespace, keys[0])
	if string(shard.Data[keys[0]]) != "a" || string(shard.Data[keys[1]]) != "b" {
		t.Errorf("shard data %v, want both writers' entries", shard.Data)
	}

	// Dropped after being idle, the state is read again before the next write: the shard is
	// known to exist, so no create is tried.
	clock.Step(30 * time.Minute)
	if err := second.Put(ctx, namespace, "other", "team/c", []solver.Entry{{Key: keys[2], Value: []byte("c")}}, never); err != nil {
		t.Fatal(err)
	}
	secondReads.reads.Store(0)
	secondWrites.writes.Store(0)
	if err := second.Put(ctx, namespace, "lb", "team/b", []solver.Entry{{Key: keys[2], Value: []byte("b2")}}, never); err != nil {
		t.Fatal(err)
	}
	if reads, writes := secondReads.reads.Load(), secondWrites.writes.Load(); reads != 1 || writes != 1 {
		t.Errorf("a known shard whose state was dropped took %d reads and %d writes, want 1 and 1", reads, writes)
	}
}

// TestShardWriterLegacySecret: the single challenge Secret of earlier versions is found while it
// exists, takes the entries written into it and loses the keys removed from it; a load balancer
// without one has none, and another Secret of that name is not taken for it.
func TestShardWriterLegacySecret(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := newNamespace(t)
	w := newWriter()
	if secret, err := w.LegacySecret(ctx, namespace, "lb"); err != nil || secret != nil {
		t.Fatalf("no Secret of earlier versions: got %v, %v; want none", secret, err)
	}

	name := certpilotv1alpha1.ChallengeSecretName("old")
	old := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{
		certpilotv1alpha1.LabelManagedBy: "certpilot", certpilotv1alpha1.LabelChallenges: "true",
	}}, Data: map[string][]byte{"kept": []byte("k")}}
	if err := kube.Client.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	secret, err := w.LegacySecret(ctx, namespace, "old")
	if err != nil || secret == nil {
		t.Fatalf("the Secret of earlier versions: got %v, %v", secret, err)
	}
	key := certpilotv1alpha1.HTTP01Key("token")
	if err := w.PutLegacy(ctx, secret, []solver.Entry{{Key: key, Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(old), old); err != nil {
		t.Fatal(err)
	}
	if string(old.Data[key]) != "v" || string(old.Data["kept"]) != "k" {
		t.Fatalf("after PutLegacy the Secret holds %v, want the entry beside what it held", old.Data)
	}
	if err := w.RemoveLegacy(ctx, namespace, "old", []string{key}); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(old), old); err != nil {
		t.Fatal(err)
	}
	if _, ok := old.Data[key]; ok || string(old.Data["kept"]) != "k" {
		t.Errorf("after RemoveLegacy the Secret holds %v, want only what it held before", old.Data)
	}

	// A Secret of that name without the challenges label is someone else's.
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: certpilotv1alpha1.ChallengeSecretName("other")}}
	if err := kube.Client.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	if secret, err := w.LegacySecret(ctx, namespace, "other"); err != nil || secret != nil {
		t.Errorf("a Secret without the challenges label: got %v, %v; want none", secret, err)
	}
}
