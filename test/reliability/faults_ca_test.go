package reliability

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/testenv"
)

// caBatch is how many Certificates each flaky-CA scenario issues: 10 in the quick part, 10 per
// round under RELIABILITY_ROUNDS.
func caBatch(t testing.TB) int { return 10 * rounds(t, 1) }

// TestFaultsNonceRejection: Pebble rejects half of all nonces (PEBBLE_WFE_NONCEREJECT=50). Every
// certificate is issued once: a bad nonce after the CA said valid resumes the order instead of
// ordering again.
func TestFaultsNonceRejection(t *testing.T) {
	testenv.SkipIfShort(t)
	s := startStack(t, "rel-nonce", testenv.PebbleOptions{NonceRejectPercent: 50}, testenv.StackOptions{})
	n := caBatch(t)
	before := countsAt(s.Pebble)
	started := time.Now()
	certs := createCertificates(t, s, "nonce", "nonce.test", n)
	waitAllReady(t, certs, 5*time.Minute)
	checkStored(t, certs)
	got := countsAt(s.Pebble).since(before)
	checkIssuedOnce(t, got, n, 0)
	figure(t, "%d certificates at 50 %% bad nonces: %d orders, %d issued at the CA, all Ready in %s",
		n, got.orders, got.issued, time.Since(started).Round(100*time.Millisecond))
}

// caPause is how long the flaky-CA scenarios keep Pebble down.
const caPause = 20 * time.Second

// TestFaultsCAHangs: Pebble stops answering (SIGSTOP: connections are accepted, never answered)
// for caPause mid-issuance, then continues with its state. Every certificate converges, each
// issued once, with no order created twice. Pebble's validation authority is frozen too, and
// a validation whose dial or DNS lookup was in flight fails on waking (the CA then invalidates
// the order, rightly, and the Certificate retries a minute later): that tests Pebble, not the
// client, so challenges are taken as valid here (PEBBLE_VA_ALWAYS_VALID).
func TestFaultsCAHangs(t *testing.T) {
	testenv.SkipIfShort(t)
	s := startStack(t, "rel-hang", testenv.PebbleOptions{AlwaysValid: true}, testenv.StackOptions{})
	n := caBatch(t)
	before := countsAt(s.Pebble)
	offset := len(s.Manager.Output())
	certs := createCertificates(t, s, "hang", "hang.test", n)
	waitForAnOrder(t, s, offset, certs)
	if err := s.Pebble.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	timer := time.NewTimer(caPause) // the fault's duration
	<-timer.C
	if err := s.Pebble.Resume(); err != nil {
		t.Fatal(err)
	}
	waitAllReady(t, certs, 5*time.Minute)
	checkStored(t, certs)
	got := countsAt(s.Pebble).since(before)
	checkIssuedOnce(t, got, n, 0)
	figure(t, "%d certificates, Pebble stopped (SIGSTOP) for %s after the first order: %d orders, %d issued at the CA, all Ready %s after the stop",
		n, caPause, got.orders, got.issued, time.Since(paused).Round(100*time.Millisecond))
}

// TestFaultsCAReset: Pebble is restarted mid-issuance on the same URL and forgets the account,
// every order and every certificate. The issuer registers again and each Certificate that was
// not stored yet drops its order and orders once more; none is issued twice by the new CA.
func TestFaultsCAReset(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "rel-reset", testenv.PebbleOptions{}, testenv.StackOptions{})
	n := caBatch(t)
	certs := createCertificates(t, s, "reset", "reset.test", n)
	testenv.Eventually(t, 2*time.Minute, "some certificates Ready", func() error {
		if ready := countReady(ctx, t, s.Namespace, certs); ready < 1 {
			return fmt.Errorf("%d of %d Ready", ready, n)
		}
		return nil
	})
	readyBefore := countReady(ctx, t, s.Namespace, certs)
	if err := s.Pebble.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	afterReset := countsAt(s.Pebble)
	waitAllReady(t, certs, 5*time.Minute)
	checkStored(t, certs)
	got := countsAt(s.Pebble).since(afterReset)
	// Those Ready before the reset keep their certificates; each of the others (and any stored
	// in the moment between counting and the reset) orders once at the new CA.
	if left := n - readyBefore; got.issued > left || got.orders > left {
		t.Errorf("after the reset the CA saw %d orders and issued %d certificates, want at most %d each (one per Certificate not yet Ready)", got.orders, got.issued, left)
	}
	figure(t, "%d certificates, Pebble reset with %d Ready: after the reset %d orders, %d issued at the new CA, all Ready %s after the reset",
		n, readyBefore, got.orders, got.issued, time.Since(restarted).Round(100*time.Millisecond))
}
