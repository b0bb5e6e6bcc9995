package acme

import (
	"sync"
	"time"
)

// noncePool keeps the Replay-Nonces of the requests this package signs itself (postSigned:
// finalize, a replacing order, persist's POST-as-GET) for its next ones, so that each of them
// does not first ask newNonce: x/crypto's own pool, which serves its requests, is unexported.
// The freshest nonce goes first, and one older than nonceMaxAge is dropped rather than sent: a
// server forgets its nonces after a while, and a rejected one costs a round trip and a 400.
type noncePool struct {
	mu     sync.Mutex
	nonces []pooledNonce
}

type pooledNonce struct {
	value    string
	received time.Time
}

// Bounds of a noncePool: as many nonces as requests in flight in a burst, each briefly.
const (
	maxPooledNonces = 128
	nonceMaxAge     = 30 * time.Second
)

// take returns the freshest nonce received after now-nonceMaxAge, if any.
func (p *noncePool) take(now time.Time) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.nonces) > 0 {
		last := p.nonces[len(p.nonces)-1]
		p.nonces = p.nonces[:len(p.nonces)-1]
		if now.Sub(last.received) < nonceMaxAge {
			return last.value, true
		}
		p.nonces = p.nonces[:0] // the rest are older still
	}
	return "", false
}

// put keeps nonce (received at now) for a later request; an empty one, or one past the bound, is
// dropped.
func (p *noncePool) put(nonce string, now time.Time) {
	if nonce == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.nonces) >= maxPooledNonces {
		// The oldest goes: it is the first to expire.
		copy(p.nonces, p.nonces[1:])
		p.nonces = p.nonces[:len(p.nonces)-1]
	}
	p.nonces = append(p.nonces, pooledNonce{value: nonce, received: now})
}
