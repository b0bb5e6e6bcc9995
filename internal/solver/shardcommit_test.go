package solver

import (
	"maps"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// set returns a compute that sets key to value for owner, unless the view already holds key.
func set(key, value string, sawHeld *bool) func(*corev1.Secret) (map[string]any, map[string]any) {
	return func(view *corev1.Secret) (map[string]any, map[string]any) {
		if _, exists := view.Data[key]; exists {
			if sawHeld != nil {
				*sawHeld = true
			}
			return nil, nil
		}
		return map[string]any{key: []byte(value)},
			map[string]any{certpilotv1alpha1.ChallengeOwnerAnnotation(key): value + "@1"}
	}
}

func TestMergeChanges(t *testing.T) {
	remove := func(key string) func(*corev1.Secret) (map[string]any, map[string]any) {
		return func(*corev1.Secret) (map[string]any, map[string]any) {
			return map[string]any{key: nil}, map[string]any{certpilotv1alpha1.ChallengeOwnerAnnotation(key): nil}
		}
	}
	var secondSawHeld bool
	tests := map[string]struct {
		stored   map[string][]byte
		batch    []*shardChange
		wantData map[string]any
		check    func(t *testing.T)
	}{
		"two keys in one write": {
			batch:    []*shardChange{{compute: set("a", "one", nil)}, {compute: set("b", "two", nil)}},
			wantData: map[string]any{"a": []byte("one"), "b": []byte("two")},
		},
		"a later change sees an earlier one's key": {
			batch:    []*shardChange{{compute: set("a", "one", nil)}, {compute: set("a", "two", &secondSawHeld)}},
			wantData: map[string]any{"a": []byte("one")},
			check: func(t *testing.T) {
				if !secondSawHeld {
					t.Error("the second change did not see the first one's key")
				}
			},
		},
		"a flush changes nothing": {
			batch:    []*shardChange{{}},
			wantData: map[string]any{},
		},
		"removed, then taken by another": {
			stored:   map[string][]byte{"a": []byte("old")},
			batch:    []*shardChange{{compute: remove("a")}, {compute: set("a", "new", nil)}},
			wantData: map[string]any{"a": []byte("new")},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			view := withoutKeys(&corev1.Secret{Data: tc.stored}, nil)
			data, annotations := map[string]any{}, map[string]any{}
			mergeChanges(view, data, annotations, tc.batch)
			if len(data) != len(tc.wantData) {
				t.Fatalf("data %v, want %v", data, tc.wantData)
			}
			for key, want := range tc.wantData {
				if got, ok := data[key].([]byte); !ok || string(got) != string(want.([]byte)) {
					t.Errorf("data[%s] = %v, want %s", key, data[key], want)
				}
				if string(view.Data[key]) != string(want.([]byte)) {
					t.Errorf("the view holds %s = %q, want %s", key, view.Data[key], want)
				}
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}

func TestCleanups(t *testing.T) {
	now := time.Unix(100000, 0)
	stamp := func(owner string, at time.Time) string { return ownerStamp(owner, at) }
	secret := &corev1.Secret{
		Data: map[string][]byte{"mine": []byte("1"), "theirs": []byte("2"), "stale": []byte("3"), "fresh": []byte("4")},
	}
	secret.Annotations = map[string]string{
		certpilotv1alpha1.ChallengeOwnerAnnotation("mine"):   stamp("team/a", now),
		certpilotv1alpha1.ChallengeOwnerAnnotation("theirs"): stamp("team/b", now),
		certpilotv1alpha1.ChallengeOwnerAnnotation("stale"):  stamp("team/gone", now.Add(-MaxResponseAge-time.Second)),
		certpilotv1alpha1.ChallengeOwnerAnnotation("fresh"):  stamp("team/c", now.Add(-time.Minute)),
	}
	removals := map[string]string{"mine": "team/a", "theirs": "team/a", "absent": "team/a"}
	data, annotations := cleanups(secret, removals, now)
	want := map[string]bool{"mine": true, "stale": true}
	if len(data) != len(want) || len(annotations) != len(want) {
		t.Fatalf("cleanups removed %v (annotations %v), want %v", data, annotations, want)
	}
	for key := range want {
		if value, ok := data[key]; !ok || value != nil {
			t.Errorf("%s not removed", key)
		}
		if value, ok := annotations[certpilotv1alpha1.ChallengeOwnerAnnotation(key)]; !ok || value != nil {
			t.Errorf("%s's owner annotation not removed", key)
		}
	}
	if data, _ := cleanups(nil, removals, now); len(data) != 0 {
		t.Errorf("cleanups of an absent shard: %v", data)
	}
}

// TestRemovalsQueuedDuringAWriteStay: a write forgets only the removals it carried; one queued
// while it was in flight (or queued again by another owner) waits for the next.
func TestRemovalsQueuedDuringAWriteStay(t *testing.T) {
	state := &shardState{removals: map[string]string{"a": "team/a", "b": "team/b"}}
	carried := state.takeRemovals()
	state.mu.Lock()
	state.removals["c"] = "team/c" // queued while the write is in flight
	state.removals["b"] = "team/x" // the key changed hands and is released again
	state.mu.Unlock()
	state.forgetRemovals(carried)
	if want := map[string]string{"b": "team/x", "c": "team/c"}; !maps.Equal(state.removals, want) {
		t.Errorf("removals after the write: %v, want %v", state.removals, want)
	}
}
