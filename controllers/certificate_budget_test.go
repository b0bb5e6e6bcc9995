package controllers

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	xacme "golang.org/x/crypto/acme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/budget"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestAccountOf: the budget's account is the one the issuer's status records, the same for every
// reconcile (a client learns its URL only with its first signed request); without it, the
// issuer, a namespaced Issuer with its namespace.
func TestAccountOf(t *testing.T) {
	registered := &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "shared"}}
	registered.Status.AccountURI = "https://ca.example/acct/7"
	tests := map[string]struct {
		issuer certpilotv1alpha1.GenericIssuer
		ref    certpilotv1alpha1.IssuerReference
		want   string
	}{
		"registered":                     {registered, certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "shared"}, "https://ca.example/acct/7"},
		"a ClusterIssuer not registered": {nil, certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "shared"}, "ClusterIssuer/shared"},
		"an Issuer not registered":       {nil, certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "own"}, "Issuer/team-a/own"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			run := &certificateRun{cert: &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a"},
				Spec: certpilotv1alpha1.CertificateSpec{IssuerRef: tc.ref}}, issuer: tc.issuer}
			if got := accountOf(run); got != tc.want {
				t.Errorf("accountOf = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestOrderBudgetTake: a namespace past its budget is Stalled (Throttled) until its next order,
// a paused account makes it wait (AccountPaused); another namespace orders meanwhile.
func TestOrderBudgetTake(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ledger := &budget.Ledger{Limit: budget.Limit{Orders: 1, Per: time.Hour}}
	b := orderBudget{ledger: ledger, clock: clocktesting.NewFakePassiveClock(now)}
	issuer := &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "shared"}}
	issuer.Status.AccountURI = "https://ca.example/acct/7"
	runIn := func(namespace string) *certificateRun {
		return &certificateRun{issuer: issuer, cert: &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: namespace},
			Spec: certpilotv1alpha1.CertificateSpec{IssuerRef: certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "shared"}}}}
	}
	if err := b.take(context.Background(), runIn("team-a")); err != nil {
		t.Fatalf("first order: %v", err)
	}
	err := b.take(context.Background(), runIn("team-a"))
	if s, ok := asStalled(err); !ok || s.Reason != budget.ReasonThrottled || s.After != time.Hour+time.Second ||
		!strings.Contains(s.Message, "next order at 2026-12-06T13:00:01Z") {
		t.Errorf("second order of team-a: %v, want Stalled Throttled for 1h1s", err)
	}
	if err := b.take(context.Background(), runIn("team-b")); err != nil {
		t.Errorf("team-b: %v, want its own budget", err)
	}
	ledger.RateLimited(issuer.Status.AccountURI, "team-c", 10*time.Second, now)
	if w, ok := asWait(b.take(context.Background(), runIn("team-d"))); !ok || w.Reason != budget.ReasonAccountPaused || w.After != 10*time.Second {
		t.Errorf("team-d during the account's pause: %+v, want a 10 s AccountPaused wait", w)
	}
	if err := (orderBudget{clock: b.clock}).take(context.Background(), runIn("team-a")); err != nil {
		t.Errorf("without a ledger: %v", err)
	}
}

// TestOrderBudgetRecordsAccountPause: a rateLimited answer writes the account's pause into the
// issuer's status once, however many Certificates get one during the pause; another issuer on
// the same account records it when its Certificate is refused for it; a manager that starts
// again with an empty ledger finds it there and waits (AccountPaused) until it ends.
func TestOrderBudgetRecordsAccountPause(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := createNamespace(t, "pause-")
	issuer := &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "shared"},
		Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
			Server: "https://ca.example/directory", PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "account"},
		}},
	}
	sibling := issuer.DeepCopy()
	sibling.Name = "sibling"
	create(t, issuer)
	create(t, sibling)
	const account = "https://ca.example/acct/1"
	issuer.Status.AccountURI, sibling.Status.AccountURI = account, account
	now := time.Now().Truncate(time.Second).Add(300 * time.Millisecond)
	clock := clocktesting.NewFakePassiveClock(now)
	b := orderBudget{ledger: &budget.Ledger{}, clock: clock, client: testKube.Client}
	runIn := func(issuer *certpilotv1alpha1.Issuer, name string) *certificateRun {
		return &certificateRun{issuer: issuer, cert: &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: certpilotv1alpha1.CertificateSpec{IssuerRef: certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: issuer.Name}}}}
	}
	rateLimited := &xacme.Error{StatusCode: http.StatusTooManyRequests, ProblemType: "urn:ietf:params:acme:error:rateLimited"}
	b.rateLimited(ctx, runIn(issuer, "first"), rateLimited, time.Hour)

	recorded := &certpilotv1alpha1.Issuer{}
	if err := testKube.Client.Get(ctx, client.ObjectKeyFromObject(issuer), recorded); err != nil {
		t.Fatal(err)
	}
	want := now.Truncate(time.Second).Add(budget.MaxAccountPause + time.Second)
	if got := recorded.Status.OrdersPausedUntil; got == nil || !got.Time.Equal(want) {
		t.Fatalf("status.ordersPausedUntil = %v, want %v (the account's pause, rounded up)", got, want)
	}
	version := recorded.ResourceVersion
	for i := range 10 {
		clock.SetTime(now.Add(time.Duration(i) * time.Second))
		// Half the reconciles still see the issuer from before the write, as a cache may.
		seen := issuer
		if i%2 == 0 {
			seen = recorded
		}
		b.rateLimited(ctx, runIn(seen, fmt.Sprintf("more-%d", i)), rateLimited, time.Hour)
	}
	if err := testKube.Client.Get(ctx, client.ObjectKeyFromObject(issuer), recorded); err != nil {
		t.Fatal(err)
	}
	if recorded.ResourceVersion != version {
		t.Errorf("the issuer was written again for the same pause (resourceVersion %s, then %s)", version, recorded.ResourceVersion)
	}
	recorded.Status.AccountURI = account // as the issuer reconciler would have recorded it

	if w, ok := asWait(b.take(ctx, runIn(sibling, "sibling-order"))); !ok || w.Reason != budget.ReasonAccountPaused {
		t.Fatalf("an order with the sibling issuer during the pause: %v, want AccountPaused", w)
	}
	siblingRecorded := &certpilotv1alpha1.Issuer{}
	if err := testKube.Client.Get(ctx, client.ObjectKeyFromObject(sibling), siblingRecorded); err != nil {
		t.Fatal(err)
	}
	// The answers since the first lengthened the pause by seconds: recorded for the sibling, not
	// again for the first issuer (within budget.RecordSlack).
	siblingWant := b.ledger.AccountPausedUntil(account).Truncate(time.Second).Add(time.Second)
	if got := siblingRecorded.Status.OrdersPausedUntil; got == nil || !got.Time.Equal(siblingWant) {
		t.Errorf("the sibling's status.ordersPausedUntil = %v, want the account's pause %v", got, siblingWant)
	}

	restarted := orderBudget{ledger: &budget.Ledger{}, clock: clocktesting.NewFakePassiveClock(now.Add(time.Minute)), client: testKube.Client}
	if w, ok := asWait(restarted.take(ctx, runIn(recorded, "after-restart"))); !ok || w.Reason != budget.ReasonAccountPaused || w.After != want.Sub(now.Add(time.Minute)) {
		t.Errorf("an order after a restart: %+v, want an AccountPaused wait until %v", w, want)
	}
	ended := orderBudget{ledger: &budget.Ledger{}, clock: clocktesting.NewFakePassiveClock(want), client: testKube.Client}
	if err := ended.take(ctx, runIn(recorded, "after-the-pause")); err != nil {
		t.Errorf("an order once the recorded pause ended: %v", err)
	}
}
