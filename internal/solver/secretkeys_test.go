package solver

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/certpilot/certpilot/internal/kube"
)

// countingReader counts the reads that reach the API.
type countingReader struct {
	client.Client
	gets int
}

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.gets++
	return r.Client.Get(ctx, key, obj, opts...)
}

// TestReadSecretKey: a TSIG key is read from the API once per secretKeyTTL, again after the
// server refused it (forget) or the TTL passed, and a missing Secret is never remembered.
func TestReadSecretKey(t *testing.T) {
	ctx := context.Background()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "dns", Name: "tsig"}, Data: map[string][]byte{"key": []byte("old")}}
	api := &countingReader{Client: fake.NewClientBuilder().WithObjects(secret).Build()}
	clock := clocktesting.NewFakePassiveClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	deps := &Deps{APIReader: api, Clock: clock}
	read := func(step string, wantValue string, wantGets int) {
		t.Helper()
		value, err := deps.readSecretKey(ctx, "dns", "tsig", "key")
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if string(value) != wantValue || api.gets != wantGets {
			t.Fatalf("%s: value %q after %d reads of the API, want %q after %d", step, value, api.gets, wantValue, wantGets)
		}
	}
	read("first", "old", 1)
	read("within the TTL", "old", 1)

	// Rotated in the API: the remembered key is used until the TTL passes or the server refuses it.
	secret.Data["key"] = []byte("new")
	if err := api.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	read("rotated, within the TTL", "old", 1)
	deps.forgetSecretKey("dns", "tsig", "key")
	read("after the server refused it", "new", 2)
	clock.SetTime(clock.Now().Add(secretKeyTTL))
	read("after the TTL", "new", 3)

	// Another namespace's Secret of the same name is another key.
	if _, err := deps.readSecretKey(ctx, "other", "tsig", "key"); !isMissing(err) {
		t.Fatalf("other namespace: %v, want a missing Secret", err)
	}
	if err := api.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	clock.SetTime(clock.Now().Add(secretKeyTTL))
	for range 2 {
		if _, err := deps.readSecretKey(ctx, "dns", "tsig", "key"); !isMissing(err) {
			t.Fatalf("deleted: %v, want a missing Secret", err)
		}
	}
	if api.gets != 6 {
		t.Fatalf("%d reads of the API, want 6: a missing Secret is read again every time", api.gets)
	}
}

func isMissing(err error) bool {
	var missing *kube.SecretKeyError
	return errors.As(err, &missing) && missing.Missing
}
