package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func TestOwnWritesEcho(t *testing.T) {
	secret := func(version string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web-tls", ResourceVersion: version}}
	}
	var w ownWrites
	p := w.notEcho()

	if !p.Create(event.CreateEvent{Object: secret("5")}) {
		t.Fatal("a Secret this controller never wrote was filtered out")
	}
	w.remember(secret("7"))
	if p.Create(event.CreateEvent{Object: secret("7")}) {
		t.Fatal("the echo of this controller's own create woke the Certificate")
	}
	if !p.Update(event.UpdateEvent{ObjectOld: secret("7"), ObjectNew: secret("7")}) {
		t.Fatal("a second event of the same version (a resync) was filtered out: the echo comes once")
	}

	w.remember(secret("9"))
	if !p.Update(event.UpdateEvent{ObjectOld: secret("9"), ObjectNew: secret("10")}) {
		t.Fatal("someone else's write after this controller's was filtered out")
	}
	if !p.Update(event.UpdateEvent{ObjectOld: secret("10"), ObjectNew: secret("9")}) {
		t.Fatal("a write seen after a later version is still remembered")
	}

	w.remember(secret("11"))
	if !p.Delete(event.DeleteEvent{Object: secret("11")}) {
		t.Fatal("a deleted Secret did not wake its Certificate")
	}
	if !p.Create(event.CreateEvent{Object: secret("11")}) {
		t.Fatal("a deletion did not end what was remembered of the Secret")
	}
}
