package reliability

import (
	"context"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// Leader election timings of controller-runtime's defaults, which main.go keeps. A standby
// tries every retryPeriod jittered by up to 1.2 times more (client-go's JitterFactor), and
// counts the lease's expiry from when it last saw the record change: it takes a lease whose
// holder died within leaseDuration plus two jittered retry periods.
const (
	leaseDuration = 15 * time.Second
	retryPeriod   = 2 * time.Second
	takeoverBound = leaseDuration + 2*retryPeriod*22/10 + 3*time.Second // 3 s: a machine shared with other builds
)

// TestFaultsLeaderKilledMidIssuance: two managers with leader election, as the chart runs them;
// the leader is killed with SIGKILL while 50 certificates are being issued. The other replica
// takes the lease within its duration (plus a retry period and scheduling slack on a shared
// machine) and finishes every certificate: no certificate issued twice at the CA, no order
// created twice.
func TestFaultsLeaderKilledMidIssuance(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := testenv.Namespace(t, "rel-ha")
	leaderArgs := []string{"--leader-elect", "--leader-election-namespace", namespace + "-system"}
	s := startStack(t, "rel-ha", testenv.PebbleOptions{NonceRejectPercent: 5}, testenv.StackOptions{ManagerArgs: leaderArgs})
	// The stack's manager is the leader: the ClusterIssuer became Ready under it alone.
	replicas := []*testenv.Process{s.Manager}
	standby, err := s.StartReplica("manager-b", leaderArgs...)
	if err != nil {
		t.Fatal(err)
	}
	replicas = append(replicas, standby)
	t.Cleanup(func() {
		for _, replica := range replicas {
			replica.Stop(20 * time.Second)
			if t.Failed() {
				t.Logf("%s output:\n%s", replica.Name, replica.Output())
			}
		}
	})
	lease := client.ObjectKey{Namespace: namespace + "-system", Name: "certpilot.dev"}
	holder := func() string {
		var l coordinationv1.Lease
		if err := kube.Client.Get(ctx, lease, &l); err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}

	const perRound = 50
	for round := range rounds(t, 1) {
		leader := replicas[0]
		before := countsAt(s.Pebble)
		certs := createCertificates(t, s, fmt.Sprintf("ha-r%d", round), "ha.test", perRound)
		// Kill mid-issuance: some certificates Ready, most not, and every order recorded in its
		// claim Secret (a first issuance creates the claim with the order). A kill between the
		// CA's answer to a new order and that write costs the order (docs/design.md): an issuance
		// takes one reconcile now, so with 50 at once some are always in that moment, and the
		// extra orders would measure the kill's timing, not the takeover. TestFaultsCrashAtEachStep
		// kills in that moment on purpose.
		testenv.Eventually(t, 2*time.Minute, "some certificates Ready, every order recorded", func() error {
			ready := countReady(ctx, t, s.Namespace, certs)
			if ready < perRound/5 {
				return fmt.Errorf("%d of %d Ready", ready, perRound)
			}
			if claims := countClaims(ctx, t, s.Namespace, certs); claims < perRound {
				return fmt.Errorf("%d of %d orders recorded in a claim Secret", claims, perRound)
			}
			return nil
		})
		readyAtKill := countReady(ctx, t, s.Namespace, certs)
		oldHolder := holder()
		leader.Kill()
		killed := time.Now()
		var takeover time.Duration
		testenv.Eventually(t, takeoverBound+10*time.Second, "another replica holds the lease", func() error {
			if h := holder(); h == "" || h == oldHolder {
				return fmt.Errorf("lease held by %q", h)
			}
			takeover = time.Since(killed)
			return nil
		})
		if takeover > takeoverBound {
			t.Errorf("the standby took the lease %s after the leader was killed, want within %s (lease %s)", takeover, takeoverBound, leaseDuration)
		}
		waitAllReady(t, certs, 3*time.Minute)
		converged := time.Since(killed)
		checkStored(t, certs)
		got := countsAt(s.Pebble).since(before)
		checkIssuedOnce(t, got, perRound, 1)
		if got.orders != perRound {
			t.Logf("duplicate orders: %d orders for %d certificates", got.orders, perRound)
		}
		figure(t, "round %d: %d certificates, leader killed with %d Ready; lease taken after %s, all Ready %s after the kill; %d orders, %d issued at the CA",
			round, perRound, readyAtKill, takeover.Round(100*time.Millisecond), converged.Round(100*time.Millisecond), got.orders, got.issued)

		// The killed replica comes back as the standby, as its pod would be restarted.
		again, err := s.StartReplica(fmt.Sprintf("manager-r%d", round), leaderArgs...)
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas[1:], again)
	}
}

// countClaims counts the claim Secrets of certs.
func countClaims(ctx context.Context, t testing.TB, namespace string, certs []*certpilotv1alpha1.Certificate) int {
	t.Helper()
	var list corev1.SecretList
	if err := kube.Client.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels{certpilotv1alpha1.LabelClaim: "true"}); err != nil {
		t.Fatal(err)
	}
	wanted := namesOf(certs)
	claims := 0
	for _, secret := range list.Items {
		if wanted[secret.Labels[certpilotv1alpha1.LabelCertificate]] {
			claims++
		}
	}
	return claims
}

// namesOf is the set of certs' names.
func namesOf(certs []*certpilotv1alpha1.Certificate) map[string]bool {
	names := map[string]bool{}
	for _, cert := range certs {
		names[cert.Name] = true
	}
	return names
}

func countReady(ctx context.Context, t testing.TB, namespace string, certs []*certpilotv1alpha1.Certificate) int {
	t.Helper()
	var list certpilotv1alpha1.CertificateList
	if err := kube.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	wanted := namesOf(certs)
	ready := 0
	for _, cert := range list.Items {
		if wanted[cert.Name] && meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady) {
			ready++
		}
	}
	return ready
}
