package controllers

import (
	"crypto/rsa"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
)

// TestKeyMaker: an ECDSA key is made at once; an RSA key that takes longer than keyInlineWait
// is made in the background, its Certificate is woken when it is ready, and the next take hands
// it out, once. A spec or revision change starts another key.
func TestKeyMaker(t *testing.T) {
	var k keyMaker
	events := k.events()
	ecdsa := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ec", UID: "uid-ec"}}
	if keyPEM, ready, err := k.take(ecdsa, "1"); err != nil || !ready || len(keyPEM) == 0 {
		t.Fatalf("ECDSA: ready %v, %d bytes, %v; want a key at once", ready, len(keyPEM), err)
	}

	rsaCert := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rsa", UID: "uid-rsa"},
		Spec: certpilotv1alpha1.CertificateSpec{PrivateKey: &certpilotv1alpha1.PrivateKey{Algorithm: certpilotv1alpha1.KeyAlgorithmRSA, Size: 4096}}}
	keyPEM, ready, err := k.take(rsaCert, "1")
	if err != nil || ready {
		t.Fatalf("RSA-4096: ready %v, %v; want it made in the background (it takes longer than %s)", ready, err, keyInlineWait)
	}
	select {
	case e := <-events:
		if e.Object.Name != "rsa" || e.Object.Namespace != "ns" {
			t.Fatalf("woke %s/%s, want ns/rsa", e.Object.Namespace, e.Object.Name)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the Certificate was not woken when its key was ready")
	}
	if keyPEM, ready, err = k.take(rsaCert, "1"); err != nil || !ready {
		t.Fatalf("after the wake-up: ready %v, %v", ready, err)
	}
	key, err := pki.DecodePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if rsaKey, ok := key.(*rsa.PrivateKey); !ok || rsaKey.N.BitLen() != 4096 {
		t.Fatalf("key %T, want RSA-4096", key)
	}
	// Handed out once: the next take (another revision) makes another key.
	if _, ready, _ := k.take(rsaCert, "2"); ready {
		t.Fatal("revision 2 got a key at once: it must be made anew")
	}
	k.forget(types.NamespacedName{Namespace: "ns", Name: "rsa"})
}
