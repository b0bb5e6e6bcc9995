package controllers

import (
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// Making the private key of a new order. An ECDSA key takes microseconds; an RSA key hundreds
// of milliseconds of one core, and a burst of issuances that made their keys inside the workers
// would hold every worker (and the issuances already at the CA, waiting for one) until the
// keys are done. So a key not made within keyInlineWait is finished in the background, at most
// two per processor at a time (generateKey), and its Certificate is woken when it is ready.
const (
	keyInlineWait = 20 * time.Millisecond
	// keyWakeFallback looks at the Certificate again should its wake-up be lost.
	keyWakeFallback = 5 * time.Second
	// reasonGeneratingKey is the wait of a Certificate whose key is being made.
	reasonGeneratingKey = "GeneratingKey"
)

// keyMaker makes the keys of new orders, one at a time per Certificate. Its zero value is ready
// to use.
type keyMaker struct {
	mu      sync.Mutex
	pending map[types.NamespacedName]*pendingKey
	wake    chan event.TypedGenericEvent[*certpilotv1alpha1.Certificate]
}

// pendingKey is a key being made for one revision of a Certificate, as its spec asks.
type pendingKey struct {
	uid      types.UID
	revision string
	spec     certpilotv1alpha1.PrivateKey
	done     chan struct{}
	pem      []byte
	err      error
	// waited is set once a reconcile gave up waiting for it: its end wakes the Certificate.
	waited bool
}

// events is where the Certificates whose keys are ready are announced.
func (k *keyMaker) events() chan event.TypedGenericEvent[*certpilotv1alpha1.Certificate] {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.wake == nil {
		k.wake = make(chan event.TypedGenericEvent[*certpilotv1alpha1.Certificate], 1024)
	}
	return k.wake
}

// take returns the key for cert's revision when it is ready: an ECDSA key at once, an RSA key
// when it is made within keyInlineWait; else it goes on being made and the Certificate is woken
// when it is. A key is handed out once: a second take starts another.
func (k *keyMaker) take(cert *certpilotv1alpha1.Certificate, revision string) (keyPEM []byte, ready bool, err error) {
	spec := keySpecOf(cert)
	if spec.Algorithm != certpilotv1alpha1.KeyAlgorithmRSA {
		keyPEM, err := generateKey(cert) // microseconds
		return keyPEM, true, err
	}
	key := types.NamespacedName{Namespace: cert.Namespace, Name: cert.Name}
	wake := k.events()
	k.mu.Lock()
	p := k.pending[key]
	if p == nil || p.uid != cert.UID || p.revision != revision || p.spec != spec {
		p = &pendingKey{uid: cert.UID, revision: revision, spec: spec, done: make(chan struct{})}
		if k.pending == nil {
			k.pending = map[types.NamespacedName]*pendingKey{}
		}
		k.pending[key] = p
		target := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: cert.Namespace, Name: cert.Name}}
		target.Spec.PrivateKey = cert.Spec.PrivateKey.DeepCopy()
		go func() {
			keyPEM, err := generateKey(target)
			k.mu.Lock()
			p.pem, p.err = keyPEM, err
			close(p.done)
			waited := p.waited
			k.mu.Unlock()
			if waited {
				select {
				case wake <- event.TypedGenericEvent[*certpilotv1alpha1.Certificate]{Object: target}:
				default: // full: keyWakeFallback looks again
				}
			}
		}()
	}
	k.mu.Unlock()
	timer := time.NewTimer(keyInlineWait)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		k.mu.Lock()
		defer k.mu.Unlock()
		select {
		case <-p.done: // finished meanwhile
		default:
			p.waited = true
			return nil, false, nil
		}
	}
	k.mu.Lock()
	if k.pending[key] == p {
		delete(k.pending, key)
	}
	k.mu.Unlock()
	return p.pem, true, p.err
}

// forget drops what is being made for a Certificate that is gone.
func (k *keyMaker) forget(key types.NamespacedName) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.pending, key)
}

// keySpecOf is the key the Certificate asks for (the zero value: the default).
func keySpecOf(cert *certpilotv1alpha1.Certificate) certpilotv1alpha1.PrivateKey {
	if cert.Spec.PrivateKey == nil {
		return certpilotv1alpha1.PrivateKey{}
	}
	return *cert.Spec.PrivateKey
}
