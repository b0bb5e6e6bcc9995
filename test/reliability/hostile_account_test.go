package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/budget"
	"github.com/certpilot/certpilot/internal/testenv"
)

// hostileSharedCases are the hostile-tenant suite's cases on what tenants share (the load
// balancer, the ACME account) and on the claim of a Secret name, run by TestHostileTenant on a
// manager started with --namespace-order-budget=5 --challenge-hold=20s: a name held by an order
// that never validates is released, a Secret squatting on a claim's name costs no order, editing
// a Certificate does not lift the backoff of a failed validation, a namespace past its budget is
// Throttled while others order, and a rateLimited answer pauses the account. limited is a tenant
// CA that answers every new order with rateLimited and a Retry-After of an hour.
func hostileSharedCases(t *testing.T, s *testenv.Stack, tenant string, limited *tenantCA, caBundle []byte,
	manualCertificate func(*testing.T, string, string, certpilotv1alpha1.IssuerReference, ...string) *certpilotv1alpha1.Certificate,
	certificateSays func(*testing.T, *certpilotv1alpha1.Certificate, string),
	stalledBy func(*testing.T, *certpilotv1alpha1.Certificate, string)) {
	ctx := context.Background()
	stackRef := certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: s.Issuer}
	squat := s.Namespace + "-squat"
	other := s.Namespace + "-other"
	createNamespaces(t, squat, other)
	deleteWhenDone(t, squat, other)
	get := func(t *testing.T, cert *certpilotv1alpha1.Certificate) {
		t.Helper()
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("loadbalancer/a name held by an order that never validates is released to the other tenant", func(t *testing.T) {
		// The holder lists the other tenant's name beside one it never proves (a manual dns01
		// record nobody creates): its order stays open, and nothing of it is accepted.
		holder := s.TLSALPN01Certificate("lb-holder", "shared-name.example.com", "never.lb-holder.example.com")
		holder.Spec.Solvers = []certpilotv1alpha1.NamedSolver{{DNSNames: []string{"never.lb-holder.example.com"},
			Solver: certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{Manual: &certpilotv1alpha1.ManualDNS01{}}}}}
		if err := kube.Client.Create(ctx, holder); err != nil {
			t.Fatal(err)
		}
		key := certpilotv1alpha1.TLSALPN01Key("shared-name.example.com")
		testenv.Eventually(t, time.Minute, "the holder's response published", func() error {
			responses, err := s.ChallengeResponses(ctx)
			if err != nil {
				return err
			}
			if _, ok := responses[key]; !ok {
				return fmt.Errorf("no response for shared-name.example.com")
			}
			return nil
		})
		victim := s.TLSALPN01Certificate("lb-victim", "shared-name.example.com")
		started := time.Now()
		if err := kube.Client.Create(ctx, victim); err != nil {
			t.Fatal(err)
		}
		certificateSays(t, victim, "is held by Certificate "+s.Namespace+"/lb-holder")
		waitAllReady(t, []*certpilotv1alpha1.Certificate{victim}, 2*time.Minute)
		took := time.Since(started)
		if took > 20*time.Second+time.Minute {
			t.Errorf("the other tenant's Certificate was Ready %v after it was created, want within the 20 s hold and a minute", took)
		}
		get(t, holder)
		if holder.Status.SerialNumber != "" {
			t.Errorf("the holder was issued a certificate")
		}
		figure(t, "a name held by an order that never validates, hold bound 20 s (--challenge-hold; default 10 min): the other tenant's Certificate ChallengeNameBusy, then Ready %v after creation",
			took.Round(100*time.Millisecond))
		if err := kube.Client.Delete(ctx, holder); err != nil {
			t.Fatal(err)
		}
	})

	// A Secret that is not certpilot's, named as the claim of the Certificate's secretName.
	squatter := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: squat, Name: "squatted-tls" + certpilotv1alpha1.ClaimSecretSuffix},
		Data: map[string][]byte{"note": []byte("the tenant's own")}}
	if err := kube.Client.Create(ctx, squatter); err != nil {
		t.Fatal(err)
	}
	squatBefore := countsAt(s.Pebble)
	var squatted *certpilotv1alpha1.Certificate
	t.Run("claim/a Secret squatting on the claim's name stalls the Certificate before any order", func(t *testing.T) {
		squatted = manualCertificate(t, squat, "squatted", stackRef, "squatted.example.com")
		stalledBy(t, squatted, "SecretNotOwned")
		if got := countsAt(s.Pebble).since(squatBefore); got.orders != 0 {
			t.Errorf("the CA saw %d orders, want 0", got.orders)
		}
	})
	t.Run("claim/touching the squatted Certificate orders nothing", func(t *testing.T) {
		if squatted == nil {
			t.Skip("no Certificate")
		}
		for i := range 3 {
			offset := len(s.Manager.Output())
			patch := client.MergeFrom(squatted.DeepCopy())
			metav1.SetMetaDataAnnotation(&squatted.ObjectMeta, "example.com/touched", fmt.Sprint(i))
			if err := kube.Client.Patch(ctx, squatted, patch); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, time.Minute, "the touched Certificate reconciled", func() error {
				if _, ok := managerLogged(s, offset, "Stalled until the spec or a referenced object changes", []string{squatted.Name}); !ok {
					return fmt.Errorf("no reconcile logged since the touch")
				}
				return nil
			})
		}
		got := countsAt(s.Pebble).since(squatBefore)
		secret := &corev1.Secret{}
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(squatter), secret); err != nil {
			t.Fatal(err)
		}
		if got.orders != 0 || secret.ResourceVersion != squatter.ResourceVersion {
			t.Errorf("after 3 touches: the CA saw %d orders (want 0); the squatting Secret's resourceVersion %s -> %s (want unchanged)",
				got.orders, squatter.ResourceVersion, secret.ResourceVersion)
		}
		figure(t, "a squatted claim name: Stalled SecretNotOwned; 3 touches later the CA saw %d orders", got.orders)
	})

	t.Run("backoff/editing a Certificate after a failed validation keeps its backoff", func(t *testing.T) {
		// Pebble's validator finds nothing at the address this name resolves to: the CA marks the
		// order invalid.
		if err := s.Pebble.AddA("backoff.example.com", "127.0.0.9"); err != nil {
			t.Fatal(err)
		}
		cert := s.TLSALPN01Certificate("backoff", "backoff.example.com")
		if err := kube.Client.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kube.Client.Delete(context.Background(), cert) })
		testenv.Eventually(t, time.Minute, "the validation failed", func() error {
			get(t, cert)
			if cert.Status.LastFailureReason != budget.ReasonOrderInvalid {
				return fmt.Errorf("last failure %q, attempts %d", cert.Status.LastFailureReason, cert.Status.FailedIssuanceAttempts)
			}
			return nil
		})
		failedAt := time.Now()
		before := countsAt(s.Pebble)
		for i := range 3 {
			patch := client.MergeFrom(cert.DeepCopy())
			cert.Spec.RenewBefore = &metav1.Duration{Duration: time.Duration(100+i) * time.Hour}
			metav1.SetMetaDataAnnotation(&cert.ObjectMeta, certpilotv1alpha1.AnnotationRenew, fmt.Sprint("edit-", i))
			if err := kube.Client.Patch(ctx, cert, patch); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 30*time.Second, "the edit seen", func() error {
				get(t, cert)
				if cert.Status.ObservedGeneration != cert.Generation {
					return fmt.Errorf("observed generation %d of %d", cert.Status.ObservedGeneration, cert.Generation)
				}
				return nil
			})
		}
		if time.Since(failedAt) >= time.Minute {
			t.Skip("the edits took longer than the first backoff")
		}
		got := countsAt(s.Pebble).since(before)
		reconciling := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling)
		if got.orders != 0 || cert.Status.FailedIssuanceAttempts != 1 {
			t.Errorf("after 3 edits within the backoff: %d orders, %d failed attempts; want 0 and 1", got.orders, cert.Status.FailedIssuanceAttempts)
		}
		if reconciling == nil || reconciling.Reason != budget.ReasonOrderInvalid {
			t.Errorf("Reconciling is %+v, want the failure's reason until the retry", reconciling)
		}
		figure(t, "a failed validation, then 3 spec and renew-annotation edits within its 1 min backoff: %d new orders", got.orders)
		if err := kube.Client.Delete(ctx, cert); err != nil {
			t.Fatal(err)
		}
	})

	budgetBefore := countsAt(s.Pebble)
	var budgetCerts []*certpilotv1alpha1.Certificate
	t.Run("budget/a namespace past its order budget is Throttled until its next order", func(t *testing.T) {
		// The load balancer and failed validation cases above took 3 of the namespace's 5 orders.
		for i := range 3 {
			cert := s.TLSALPN01Certificate(fmt.Sprintf("budget-%d", i), fmt.Sprintf("budget-%d.example.com", i))
			if err := kube.Client.Create(ctx, cert); err != nil {
				t.Fatal(err)
			}
			budgetCerts = append(budgetCerts, cert)
		}
		var throttled *metav1.Condition
		testenv.Eventually(t, 2*time.Minute, "2 Ready, 1 Throttled", func() error {
			ready, stalled := 0, 0
			for _, cert := range budgetCerts {
				get(t, cert)
				if meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady) {
					ready++
				}
				if c := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled); c != nil &&
					c.Status == metav1.ConditionTrue && c.Reason == budget.ReasonThrottled {
					stalled, throttled = stalled+1, c
				}
			}
			if ready != 2 || stalled != 1 {
				return fmt.Errorf("%d Ready, %d Throttled", ready, stalled)
			}
			return nil
		})
		if !strings.Contains(throttled.Message, "next order at") || !strings.Contains(throttled.Message, "--namespace-order-budget") {
			t.Errorf("Throttled says %q, want the next order's time and the flag", throttled.Message)
		}
		figure(t, "budget of 5 orders per hour, 3 spent: of 3 more Certificates 2 issued, 1 Throttled (%s)", throttled.Message)
	})
	t.Run("budget/the CA saw the budget's orders only", func(t *testing.T) {
		if got := countsAt(s.Pebble).since(budgetBefore); got.orders != 2 || got.issued != 2 {
			t.Errorf("the CA saw %d orders and issued %d certificates, want 2 and 2", got.orders, got.issued)
		}
	})
	t.Run("budget/another namespace orders with the account meanwhile", func(t *testing.T) {
		cert := manualCertificate(t, other, "beside-budget", stackRef, "beside-budget.example.com")
		testenv.Eventually(t, time.Minute, "an order created", func() error {
			get(t, cert)
			if cert.Status.Order == nil || cert.Status.Order.URL == "" {
				return fmt.Errorf("no order; conditions %+v", cert.Status.Conditions)
			}
			return nil
		})
	})

	// Two namespaces' Issuers registered on one account of a CA that answers rateLimited.
	newIssuer := func(t *testing.T, namespace string) certpilotv1alpha1.IssuerReference {
		t.Helper()
		issuer := &certpilotv1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Name: "rate-limited", Namespace: namespace},
			Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
				Server: limited.URL + "/dir", CABundle: caBundle, PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "rate-limited-account"},
			}},
		}
		if err := kube.Client.Create(ctx, issuer); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, time.Minute, "the Issuer Ready", func() error {
			if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(issuer), issuer); err != nil {
				return err
			}
			if !meta.IsStatusConditionTrue(issuer.Status.Conditions, certpilotv1alpha1.ConditionReady) {
				return fmt.Errorf("conditions %+v", issuer.Status.Conditions)
			}
			return nil
		})
		return certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: issuer.Name}
	}
	pausedUntil := func(t *testing.T, cert *certpilotv1alpha1.Certificate) time.Time {
		t.Helper()
		certificateSays(t, cert, "answered rateLimited to this ACME account")
		for _, condition := range cert.Status.Conditions {
			if i := strings.LastIndex(condition.Message, "before "); condition.Reason == budget.ReasonAccountPaused && i >= 0 {
				until, err := time.Parse(time.RFC3339, strings.TrimSpace(condition.Message[i+len("before "):]))
				if err != nil {
					t.Fatalf("%s: %v", condition.Message, err)
				}
				return until
			}
		}
		t.Fatalf("no AccountPaused condition: %+v", cert.Status.Conditions)
		return time.Time{}
	}
	t.Run("ratelimit/a rateLimited answer pauses the namespace's new orders for the Retry-After", func(t *testing.T) {
		ref := newIssuer(t, tenant)
		first := manualCertificate(t, tenant, "limited-1", ref, "limited-1.tenant.example")
		certificateSays(t, first, "The CA asked to slow down")
		second := manualCertificate(t, tenant, "limited-2", ref, "limited-2.tenant.example")
		until := pausedUntil(t, second)
		if left := time.Until(until); left < 50*time.Minute || left > time.Hour {
			t.Errorf("the namespace pauses until %v (in %v), want the CA's Retry-After of an hour", until, left)
		}
		if n := limited.newOrders.Load(); n != 1 {
			t.Errorf("the CA got %d new orders, want 1", n)
		}
	})
	t.Run("ratelimit/the account's other namespaces pause at most 15 minutes", func(t *testing.T) {
		cert := manualCertificate(t, other, "limited-other", newIssuer(t, other), "limited-other.example.com")
		until := pausedUntil(t, cert)
		if left := time.Until(until); left > budget.MaxAccountPause || left <= 0 {
			t.Errorf("another namespace pauses until %v (in %v), want within %v", until, left, budget.MaxAccountPause)
		}
		if n := limited.newOrders.Load(); n != 1 {
			t.Errorf("the CA got %d new orders, want 1", n)
		}
		figure(t, "a rateLimited answer with Retry-After 1h: the namespace paused %v, another namespace on the account %v; the CA got %d new orders for 3 Certificates",
			time.Hour, time.Until(until).Round(time.Minute), limited.newOrders.Load())
	})
	t.Run("ratelimit/the account's pause survives a manager restart", func(t *testing.T) {
		issuer := &certpilotv1alpha1.Issuer{}
		if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: tenant, Name: "rate-limited"}, issuer); err != nil {
			t.Fatal(err)
		}
		recorded := issuer.Status.OrdersPausedUntil
		if recorded == nil || time.Until(recorded.Time) <= 0 || time.Until(recorded.Time) > budget.MaxAccountPause {
			t.Fatalf("the Issuer's status.ordersPausedUntil is %v, want the account's pause, within %v", recorded, budget.MaxAccountPause)
		}
		if err := s.RestartManager(); err != nil {
			t.Fatal(err)
		}
		// The Certificates above are reconciled again at the start; this one is new.
		cert := manualCertificate(t, tenant, "limited-restart", certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: issuer.Name}, "limited-restart.tenant.example")
		if until := pausedUntil(t, cert); !until.Equal(recorded.Time) {
			t.Errorf("after the restart the namespace pauses until %v, want the recorded %v", until, recorded.Time)
		}
		if n := limited.newOrders.Load(); n != 1 {
			t.Errorf("the CA got %d new orders, want 1", n)
		}
		figure(t, "a manager restarted during the account's pause: a new Certificate waits for the pause recorded in the Issuer's status (%v left); the CA got %d new orders for 4 Certificates",
			time.Until(recorded.Time).Round(time.Second), limited.newOrders.Load())
	})
}
