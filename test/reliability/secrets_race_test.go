package reliability

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestSameSecretNameRace: two Certificates created at the same moment with one secretName,
// five times. Exactly one of each pair is issued at the CA and holds the Secret; the other is
// Stalled SecretOwnedByAnotherCertificate before anything is published (its order, when it
// got one before it found the name claimed, is abandoned unvalidated), and never takes the
// Secret over.
// Once the winner is gone (and the garbage collector took its Secret), the loser takes over the
// claim the winner left and is issued.
func TestSameSecretNameRace(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startHostileStack(t, "race", testenv.PebbleOptions{NonceRejectPercent: 5})
	deleteWhenDone(t, s.Namespace)
	const pairs = 5
	type pair struct {
		a, b *certpilotv1alpha1.Certificate
	}
	var all []pair
	for i := range pairs {
		p := pair{
			a: s.TLSALPN01Certificate(fmt.Sprintf("pair%d-a", i), fmt.Sprintf("a.pair%d.race.test", i)),
			b: s.TLSALPN01Certificate(fmt.Sprintf("pair%d-b", i), fmt.Sprintf("b.pair%d.race.test", i)),
		}
		p.a.Spec.SecretName, p.b.Spec.SecretName = fmt.Sprintf("pair%d-tls", i), fmt.Sprintf("pair%d-tls", i)
		all = append(all, p)
	}
	for i, p := range all {
		before, issuedBefore := s.Pebble.OrderCount(), s.Pebble.IssuedCount()
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, cert := range []*certpilotv1alpha1.Certificate{p.a, p.b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[j] = kube.Client.Create(ctx, cert)
			}()
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		var winner, loser *certpilotv1alpha1.Certificate
		testenv.Eventually(t, 2*time.Minute, fmt.Sprintf("pair %d: one Ready, one Stalled", i), func() error {
			winner, loser = nil, nil
			for _, cert := range []*certpilotv1alpha1.Certificate{p.a, p.b} {
				if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
					return err
				}
				switch {
				case meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady):
					winner = cert
				case conditionIs(ctx, cert, "SecretOwnedByAnotherCertificate", true) == nil:
					loser = cert
				}
			}
			if winner == nil || loser == nil {
				return fmt.Errorf("%s %s; %s %s", p.a.Name, describeConditions(p.a.Status.Conditions), p.b.Name, describeConditions(p.b.Status.Conditions))
			}
			return nil
		})
		// The claim is created by the write that records the first order, so both may order
		// when both find the name unclaimed; only one certificate is ever issued.
		orders, issued := s.Pebble.OrderCount()-before, s.Pebble.IssuedCount()-issuedBefore
		if orders < 1 || orders > 2 || issued != 1 {
			t.Errorf("pair %d: %d orders and %d certificates issued at the CA, want 1 or 2 orders and 1 certificate", i, orders, issued)
		}
		if loser.Status.Order != nil || loser.Status.SerialNumber != "" {
			t.Errorf("pair %d: the loser %s has order %+v, serial %q", i, loser.Name, loser.Status.Order, loser.Status.SerialNumber)
		}
		if n := s.Pebble.ValidationAttempts(loser.Spec.DNSNames[0]); n != 0 {
			t.Errorf("pair %d: the CA validated the loser's name %d times", i, n)
		}
		assertSecretOf(t, winner)
		t.Logf("pair %d: %s won, %s is Stalled (%d orders at the CA): %s", i, winner.Name, loser.Name, orders,
			meta.FindStatusCondition(loser.Status.Conditions, certpilotv1alpha1.ConditionStalled).Message)

		if i == 0 {
			// The winner is deleted and, as the garbage collector would (envtest runs none),
			// its certificate Secret with it; its claim is left behind, as if the collector had
			// not reached it yet. The loser, looked at again, takes the stale claim over.
			if err := kube.Client.Delete(ctx, winner); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, time.Minute, "the winner gone", func() error {
				if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(winner), &certpilotv1alpha1.Certificate{}); err == nil {
					return fmt.Errorf("%s still exists", winner.Name)
				}
				return nil
			})
			if err := kube.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: winner.Spec.SecretName}}); err != nil {
				t.Fatal(err)
			}
			patch := client.MergeFrom(loser.DeepCopy())
			loser.Annotations = map[string]string{"example.com/poke": "1"}
			if err := kube.Client.Patch(ctx, loser, patch); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 2*time.Minute, "the loser issued once the winner is gone", func() error {
				return conditionIs(ctx, loser, "UpToDate", false)
			})
			assertSecretOf(t, loser)
		}
	}
	managerHealthy(t, s)
}

// assertSecretOf checks that cert's Secret holds cert's certificate, with cert as its only owner.
func assertSecretOf(t *testing.T, cert *certpilotv1alpha1.Certificate) {
	t.Helper()
	secret := &corev1.Secret{}
	if err := kube.Client.Get(context.Background(), client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, secret); err != nil {
		t.Fatal(err)
	}
	if owners := secret.OwnerReferences; len(owners) != 1 || owners[0].UID != cert.UID {
		t.Errorf("Secret %s owners %+v, want only Certificate %s", secret.Name, owners, cert.Name)
	}
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatalf("Secret %s: %v", secret.Name, err)
	}
	if !pki.DNSNamesEqual(leaf, cert.Spec.DNSNames) {
		t.Errorf("Secret %s holds a certificate for %v, want %v", secret.Name, leaf.DNSNames, cert.Spec.DNSNames)
	}
	if serial := fmt.Sprintf("%x", leaf.SerialNumber); serial != cert.Status.SerialNumber {
		t.Errorf("Secret %s serial %s, status of %s says %s", secret.Name, serial, cert.Name, cert.Status.SerialNumber)
	}
}
