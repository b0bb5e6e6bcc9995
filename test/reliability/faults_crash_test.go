package reliability

import (
	"fmt"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/testenv"
)

// crashSteps are the steps of issuance the manager logs, in order; the crash test kills it at
// each.
var crashSteps = []string{"Created ACME order", "Published challenge responses", "Accepted challenges", "Finalized order", "Stored certificate"}

// TestFaultsCrashAtEachStep: the manager is killed with SIGKILL the moment it logs each step of
// issuance for one of several certificates in flight, and started again, over several rounds.
// Every certificate ends Ready with a Secret whose key matches its certificate; the CA sees at
// most one extra order per kill and issues exactly one certificate per Certificate.
func TestFaultsCrashAtEachStep(t *testing.T) {
	testenv.SkipIfShort(t)
	inFlight := 3
	if long() {
		inFlight = 5
	}
	// Pebble's default 5 % bad nonces stay on, as in production-like runs.
	s := startStack(t, "rel-crash", testenv.PebbleOptions{NonceRejectPercent: 5}, testenv.StackOptions{})
	rounds := rounds(t, 1)
	kills := 0
	start := countsAt(s.Pebble)
	started := time.Now()
	for round := range rounds {
		for i, step := range crashSteps {
			prefix := fmt.Sprintf("crash-r%d-s%d", round, i)
			before := countsAt(s.Pebble)
			offset := len(s.Manager.Output())
			certs := createCertificates(t, s, prefix, "crash.test", inFlight)
			var victim string
			testenv.Eventually(t, time.Minute, "step "+step, func() error {
				if name, ok := managerLogged(s, offset, step, names(certs)); ok {
					victim = name
					return nil
				}
				return fmt.Errorf("the manager has not logged %q for %s-*", step, prefix)
			})
			s.KillManager()
			kills++
			if err := s.StartManager(); err != nil {
				t.Fatal(err)
			}
			waitAllReady(t, certs, 2*time.Minute)
			checkStored(t, certs)
			got := countsAt(s.Pebble).since(before)
			checkIssuedOnce(t, got, inFlight, 1)
			t.Logf("round %d, killed at %q (%s): %d orders, %d issued for %d certificates", round, step, victim, got.orders, got.issued, inFlight)
		}
	}
	total := countsAt(s.Pebble).since(start)
	figure(t, "%d rounds x %d steps, %d certificates in flight: %d kills, %d certificates, %d orders, %d issued at the CA, %s",
		rounds, len(crashSteps), inFlight, kills, rounds*len(crashSteps)*inFlight, total.orders, total.issued, time.Since(started).Round(time.Second))
}
