package solver

import (
	"context"
	"sync"
	"time"

	"github.com/certpilot/certpilot/internal/kube"
)

// secretKeyTTL is how long a key read from a Secret certpilot does not own (a TSIG key) is used
// without reading the Secret again. The reconciles of one issuance (check before ordering,
// present, clean up) read it once; a rotated key is used at most this long after the change,
// and at once when the server refuses the old one (forget).
const secretKeyTTL = 30 * time.Second

// secretKeys remembers values of Secrets that the cache does not hold (they are not
// certpilot's, so they are read from the API), for secretKeyTTL. Only successful reads are
// kept: a missing Secret or key is read again at every step, so fixing it takes effect at once.
type secretKeys struct {
	mu      sync.Mutex
	entries map[secretKeyRef]secretKeyValue
}

type secretKeyRef struct{ namespace, name, key string }

type secretKeyValue struct {
	value []byte
	read  time.Time
}

// read returns the key of the Secret namespace/name, from memory when it was read less than
// secretKeyTTL ago, else from the API (kube.ReadSecretKey: a *kube.SecretKeyError when the
// Secret or key is missing).
func (d *Deps) readSecretKey(ctx context.Context, namespace, name, key string) ([]byte, error) {
	ref, now := secretKeyRef{namespace, name, key}, d.now()
	d.secretKeys.mu.Lock()
	entry, ok := d.secretKeys.entries[ref]
	d.secretKeys.mu.Unlock()
	if ok && now.Sub(entry.read) < secretKeyTTL && !now.Before(entry.read) {
		return entry.value, nil
	}
	value, err := kube.ReadSecretKey(ctx, d.APIReader, namespace, name, key)
	if err != nil {
		d.forgetSecretKey(namespace, name, key)
		return nil, err
	}
	d.secretKeys.mu.Lock()
	defer d.secretKeys.mu.Unlock()
	if d.secretKeys.entries == nil {
		d.secretKeys.entries = map[secretKeyRef]secretKeyValue{}
	}
	for old, e := range d.secretKeys.entries {
		if now.Sub(e.read) >= secretKeyTTL {
			delete(d.secretKeys.entries, old) // bounded by the Secrets named in the last TTL
		}
	}
	d.secretKeys.entries[ref] = secretKeyValue{value: value, read: now}
	return value, nil
}

// forgetSecretKey drops a remembered key: the server refused it, so the Secret is read again.
func (d *Deps) forgetSecretKey(namespace, name, key string) {
	d.secretKeys.mu.Lock()
	defer d.secretKeys.mu.Unlock()
	delete(d.secretKeys.entries, secretKeyRef{namespace, name, key})
}
