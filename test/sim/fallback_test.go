package sim

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/controllers"
	"github.com/certpilot/certpilot/internal/acme/acmetest"
	"github.com/certpilot/certpilot/internal/solver"
	"github.com/certpilot/certpilot/internal/testenv"
)

var fallbackCertificates = flag.Int("sim.fallback-certificates", 20, "6-day certificates per arm of TestFallbackSimulator")

// TestFallbackSimulator runs -sim.fallback-certificates 6-day certificates for 16 simulated days,
// twice, against a CA that fails every request for 72 hours (429, 500 and dropped connections
// in turn, as TestRenewalSimulator's outage) from day 3.5, when their first renewals come due:
// once with that CA alone, once with a second CA (no faults) as a fallback issuer. It prints
// how many certificates the Secrets held expired, and for how long, in each arm, and asserts
// none in the arm with the fallback, whose renewals after the outage go back to the first CA.
func TestFallbackSimulator(t *testing.T) {
	testenv.SkipIfShort(t)
	for _, withFallback := range []bool{false, true} {
		arm := map[bool]string{false: "one CA", true: "with a fallback CA"}[withFallback]
		t.Run(arm, func(t *testing.T) {
			expired, longest, byIssuer, orders := runFallbackArm(t, withFallback)
			t.Logf("%s: %d of %d certificates served expired (longest %s); the first CA issued %d certificates (%d orders), the second %d (%d orders)",
				arm, expired, *fallbackCertificates, longest.Round(time.Minute), byIssuer[0], orders[0], byIssuer[1], orders[1])
			if withFallback && expired > 0 {
				t.Errorf("with a fallback CA %d certificates expired, want none", expired)
			}
		})
	}
}

// runFallbackArm runs one arm of TestFallbackSimulator and returns how many certificates were
// served expired, the longest stretch, and the certificates each CA issued and its orders.
func runFallbackArm(t *testing.T, withFallback bool) (expired int, longest time.Duration, byIssuer, orders [2]int) {
	ctx := context.Background()
	start := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	end := start.Add(16 * day)
	clock := clocktesting.NewFakeClock(start)
	outageStart := start.Add(3*day + 12*time.Hour)
	var faults []acmetest.Fault
	kinds := []acmetest.FaultKind{acmetest.FaultRateLimited, acmetest.FaultServerError, acmetest.FaultTimeout}
	for hour := range int(outageLength / time.Hour) {
		from := outageStart.Add(time.Duration(hour) * time.Hour)
		faults = append(faults, acmetest.Fault{From: from, To: from.Add(time.Hour), Kind: kinds[hour%len(kinds)], RetryAfter: 30 * time.Minute})
	}
	profiles := map[string]time.Duration{"shortlived": 6 * day}
	cas := [2]*acmetest.CA{}
	for i := range cas {
		options := acmetest.Options{Now: clock.Now, Profiles: profiles, RenewalInfoRetryAfter: 12 * time.Hour}
		if i == 0 {
			options.Faults = faults
		}
		ca, err := acmetest.Start(options)
		if err != nil {
			t.Fatal(err)
		}
		defer ca.Close()
		cas[i] = ca
	}

	namespace := createNamespace(t, ctx, "sim-fallback-")
	cached := testenv.CachedClient(t, kube, true)
	events := newEventCounter()
	accounts := &controllers.Accounts{Reader: kube.Client, UserAgent: "certpilot-sim"}
	reconciler := &controllers.CertificateReconciler{
		Client: cached, APIReader: kube.Client, Accounts: accounts, Recorder: events, Clock: clock,
		Solvers: &solver.Deps{Client: cached, APIReader: kube.Client, Recorder: events, Clock: clock, CheckTimeout: 10 * time.Second},
	}
	issuers := &controllers.IssuerReconciler{Client: kube.Client, Accounts: accounts}
	sim := newSimulation(reconciler, clock, events, *simStep, *simWorkers)
	names := [2]string{"first", "second"}
	for i, ca := range cas {
		issuer := &certpilotv1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: names[i]},
			Spec: certpilotv1alpha1.IssuerSpec{
				ACME: certpilotv1alpha1.ACMEIssuer{
					Server: ca.DirectoryURL(), Email: "ops@example.com", CABundle: ca.CABundle(), Profile: "shortlived",
					PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: names[i] + "-account"},
				},
				Solver: &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{
					Manual: &certpilotv1alpha1.ManualDNS01{}, Nameservers: []string{ca.DNSAddr()},
				}},
			},
		}
		if err := kube.Client.Create(ctx, issuer); err != nil {
			t.Fatal(err)
		}
		registerIssuer(t, ctx, issuers, issuer)
	}
	for i := range *fallbackCertificates {
		name := fmt.Sprintf("short-%03d", i)
		cert := &certpilotv1alpha1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: certpilotv1alpha1.CertificateSpec{
				DNSNames:   []string{name + ".sim.example"},
				SecretName: name,
				IssuerRef:  certpilotv1alpha1.IssuerReference{Name: names[0]},
			},
		}
		if withFallback {
			cert.Spec.FallbackIssuerRefs = []certpilotv1alpha1.IssuerReference{{Name: names[1]}}
		}
		if err := kube.Client.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		sim.add(client.ObjectKeyFromObject(cert))
	}
	if err := sim.run(ctx, end, nil); err != nil {
		t.Fatalf("The simulation stopped at %s: %v", clock.Now().Format(time.RFC3339), err)
	}
	if err := sim.verifySecrets(ctx, namespace); err != nil {
		t.Error(err)
	}
	for _, list := range sim.violations {
		if len(list) > 0 {
			expired++
		}
		for _, v := range list {
			longest = max(longest, v.to.Sub(v.from))
		}
	}
	for i, ca := range cas {
		byIssuer[i] = len(ca.Issued())
		for _, n := range ca.Stats().Orders {
			orders[i] += n
		}
	}
	// Every certificate is served by the first CA again at the end: renewals start there.
	var certificates certpilotv1alpha1.CertificateList
	if err := kube.Client.List(ctx, &certificates, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	for _, cert := range certificates.Items {
		if ref := cert.Status.IssuerRef; ref == nil || ref.Name != names[0] {
			t.Errorf("%s is served by %+v at the end, want the first issuer", cert.Name, ref)
		}
	}
	return expired, longest, byIssuer, orders
}
