package sim

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/controllers"
	"github.com/certpilot/certpilot/internal/acme/acmetest"
	"github.com/certpilot/certpilot/internal/solver"
	"github.com/certpilot/certpilot/internal/testenv"
)

var (
	// The defaults keep `go test ./...` within minutes; `make test-sim` runs the full
	// simulation: 100 certificates per lifetime for two years.
	simCertificates = flag.Int("sim.certificates", 15, "certificates per lifetime in TestRenewalSimulator")
	simDays         = flag.Int("sim.days", 65, "simulated days in TestRenewalSimulator")
	simSeed         = flag.Uint64("sim.seed", 13, "seed of TestRenewalSimulator's outage")
	// The clock advances at least this much at a time; Certificates due within it are
	// reconciled together (up to simWorkers at once), a little late. A larger step batches more
	// of the spread-out ARI polls, which are most of the work of a long simulation.
	simStep    = flag.Duration("sim.step", time.Minute, "smallest clock advance of TestRenewalSimulator")
	simWorkers = flag.Int("sim.workers", 4, "Certificates TestRenewalSimulator reconciles at once")
)

const day = 24 * time.Hour

// lifetimes are the certificate lifetimes simulated, one issuer (and CA profile) each: Let's
// Encrypt's classic 90 days, tlsserver 45 days, and a 6-day shortlived profile.
var lifetimes = []struct {
	profile  string
	lifetime time.Duration
}{
	{"classic", 90 * day},
	{"tlsserver", 45 * day},
	{"shortlived", 6 * day},
}

// outageLength is how long the CA fails every request, once, at a moment drawn from the seed.
const outageLength = 72 * time.Hour

// TestRenewalSimulator runs the certificate reconciler for -sim.days simulated days over
// -sim.certificates certificates of each lifetime (90, 45 and 6 days), issued by a CA whose
// clock is the reconciler's (acmetest) and which suggests ARI windows. `go test` runs 15 of each
// for 65 days (every lifetime renews, in about three minutes); `make test-sim` runs 100 of each
// for two years (under an hour with 8 workers: most reconciles are ARI polls). For 72 hours, at a moment
// drawn from -sim.seed, the CA fails every request: 429 with Retry-After for an hour, then 500
// for an hour, then dropped connections for an hour, and again. It asserts and prints:
//
//   - the moments a Secret held a certificate that was expired or not yet valid: none for 90-
//     and 45-day certificates; 6-day certificates may expire only during the outage (their ARI
//     window leaves about two days, less than the outage), and are printed;
//   - orders = certificates issued, for every name (no duplicate and no abandoned order), and
//     every renewal named the certificate it replaces;
//   - no renewal before the CA's window (a third of the lifetime before expiry, less a margin);
//   - the spread of the first renewals of the certificates issued in the same second: at least
//     1 % of the lifetime;
//   - ACME requests per certificate issued (ARI polls included), bounded.
func TestRenewalSimulator(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	if deadline, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-30*time.Second))
		defer cancel()
	}

	start := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	end := start.Add(time.Duration(*simDays) * day)
	clock := clocktesting.NewFakeClock(start)
	random := rand.New(rand.NewPCG(*simSeed, *simSeed))
	// After the first renewals of every lifetime, and ending well before the simulation does.
	span := end.Sub(start)
	earliest, latest := min(100*day, span/4), span-span/10-outageLength
	outageStart := start.Add(earliest + time.Duration(random.Int64N(int64(max(latest-earliest, time.Minute))))).Truncate(time.Minute)
	outageEnd := outageStart.Add(outageLength)
	var faults []acmetest.Fault
	kinds := []acmetest.FaultKind{acmetest.FaultRateLimited, acmetest.FaultServerError, acmetest.FaultTimeout}
	for hour := range int(outageLength / time.Hour) {
		from := outageStart.Add(time.Duration(hour) * time.Hour)
		faults = append(faults, acmetest.Fault{From: from, To: from.Add(time.Hour), Kind: kinds[hour%len(kinds)], RetryAfter: 30 * time.Minute})
	}
	profiles := map[string]time.Duration{}
	for _, l := range lifetimes {
		profiles[l.profile] = l.lifetime
	}
	// The CA asks for its windows to be fetched again after 12 hours, the longest certpilot
	// accepts (Let's Encrypt asks for 6): every poll is a reconcile (a write only when the window moved), and polls
	// are most of the simulation's work.
	ca, err := acmetest.Start(acmetest.Options{Now: clock.Now, Profiles: profiles, Faults: faults, RenewalInfoRetryAfter: 12 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()

	namespace := createNamespace(t, ctx, "sim-")
	writes := &statusWrites{}
	// Reads see the writes before them: a reconcile that follows another at once (in simulated
	// time, but microseconds apart in real time) reads what the previous one wrote.
	cached := writes.counting(testenv.CachedClient(t, kube, true))
	events := newEventCounter()
	accounts := &controllers.Accounts{Reader: kube.Client, UserAgent: "certpilot-sim"}
	reconciler := &controllers.CertificateReconciler{
		Client: cached, APIReader: kube.Client, Accounts: accounts, Recorder: events, Clock: clock,
		Solvers: &solver.Deps{Client: cached, APIReader: kube.Client, Recorder: events, Clock: clock, CheckTimeout: 10 * time.Second},
	}
	issuers := &controllers.IssuerReconciler{Client: kube.Client, Accounts: accounts}
	sim := newSimulation(reconciler, clock, events, *simStep, *simWorkers)

	for _, l := range lifetimes {
		issuer := &certpilotv1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: l.profile},
			Spec: certpilotv1alpha1.IssuerSpec{
				ACME: certpilotv1alpha1.ACMEIssuer{
					Server: ca.DirectoryURL(), Email: "ops@example.com", CABundle: ca.CABundle(), Profile: l.profile,
					PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: l.profile + "-account"},
				},
				// The CA's DNS server answers every pending dns-01 record: the self-check passes
				// without publishing anything.
				Solver: &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{
					Manual: &certpilotv1alpha1.ManualDNS01{}, Nameservers: []string{ca.DNSAddr()},
				}},
			},
		}
		if err := kube.Client.Create(ctx, issuer); err != nil {
			t.Fatal(err)
		}
		registerIssuer(t, ctx, issuers, issuer)
		for i := range *simCertificates {
			name := fmt.Sprintf("%s-%03d", l.profile, i)
			cert := &certpilotv1alpha1.Certificate{
				ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
				Spec: certpilotv1alpha1.CertificateSpec{
					DNSNames:   []string{name + ".sim.example"},
					SecretName: name,
					IssuerRef:  certpilotv1alpha1.IssuerReference{Name: l.profile},
				},
			}
			if err := kube.Client.Create(ctx, cert); err != nil {
				t.Fatal(err)
			}
			sim.add(client.ObjectKeyFromObject(cert))
		}
	}

	started := time.Now()
	progress := func(now time.Time, reconciles int) {
		t.Logf("%s: %d reconciles, %s of wall time", now.Format(time.DateOnly), reconciles, time.Since(started).Round(time.Second))
	}
	if err := sim.run(ctx, end, progress); err != nil {
		t.Fatalf("The simulation stopped at %s: %v", clock.Now().Format(time.RFC3339), err)
	}
	elapsed := time.Since(started)
	if err := sim.verifySecrets(ctx, namespace); err != nil {
		t.Error(err)
	}
	var certificates certpilotv1alpha1.CertificateList
	if err := kube.Client.List(ctx, &certificates, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	for _, cert := range certificates.Items {
		if ready := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReady); ready == nil || ready.Status != metav1.ConditionTrue {
			t.Errorf("%s is not Ready at the end: %+v", cert.Name, ready)
		}
	}

	stats := ca.Stats()
	issued := ca.Issued()
	t.Logf("Simulated %d days (%s to %s) of %d certificates per lifetime in %s of wall time: %d reconciles (%d returned errors)",
		*simDays, start.Format(time.DateOnly), end.Format(time.DateOnly), *simCertificates, elapsed.Round(time.Second), sim.reconciles, sim.errors)
	t.Logf("CA outage: %s to %s (429 with Retry-After 30m, 500, dropped connections, an hour each in turn); %d requests failed (%v)",
		outageStart.Format(time.RFC3339), outageEnd.Format(time.RFC3339), sumFaults(stats.Faults), stats.Faults)

	byName := map[string][]acmetest.Issued{}
	for _, c := range issued {
		byName[c.DNSNames[0]] = append(byName[c.DNSNames[0]], c)
	}
	for _, l := range lifetimes {
		checkLifetime(t, sim, stats, byName, l.profile, l.lifetime, outageStart, outageEnd)
	}

	totalRequests := stats.TotalRequests()
	perCertificate := float64(totalRequests) / float64(len(issued))
	var endpoints []string
	for endpoint, n := range stats.Requests {
		endpoints = append(endpoints, fmt.Sprintf("%s %d", endpoint, n))
	}
	sort.Strings(endpoints)
	t.Logf("ACME requests: %d for %d certificates, %.1f per certificate (renewalInfo polls included), over %d connections: %s",
		totalRequests, len(issued), perCertificate, stats.Connections, strings.Join(endpoints, ", "))
	t.Logf("Orders replacing a certificate: %d; refused as alreadyReplaced: %d; events: %v", stats.Replacing, stats.AlreadyReplaced, events.counts())
	total, pollOnly := writes.total.Load(), writes.pollOnly.Load()
	t.Logf("Certificate status writes: %d, %.1f per certificate issued; %d that only moved the next renewalInfo fetch",
		total, float64(total)/float64(len(issued)), pollOnly)
	// A poll that finds the same window is kept in memory, not written: a status write per poll
	// would be most of the API writes of a fleet at rest.
	if pollOnly > 0 {
		t.Errorf("%d status writes only moved status.renewalInfo.nextFetch, want none", pollOnly)
	}
	// An issuance takes 9 requests (nonce, order, authorization, challenge, order, finalize,
	// certificate, renewalInfo, and a directory or account lookup now and then); a healthy
	// certificate polls its window at the CA's Retry-After (12 h). The bound is what an issuance
	// and the polls of the longest lifetime cost, with room for the outage.
	if maxPerCertificate := 9.0 + float64(90*day/(12*time.Hour))*1.5; perCertificate > maxPerCertificate {
		t.Errorf("%.1f ACME requests per certificate, want at most %.0f", perCertificate, maxPerCertificate)
	}
}

// checkLifetime asserts and prints what TestRenewalSimulator promises for one lifetime.
func checkLifetime(t *testing.T, sim *simulation, stats acmetest.Stats, byName map[string][]acmetest.Issued,
	profile string, lifetime time.Duration, outageStart, outageEnd time.Time) {
	t.Helper()
	var names []string
	for name := range byName {
		if strings.HasPrefix(name, profile+"-") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) != *simCertificates {
		t.Errorf("%s: %d names got certificates, want %d", profile, len(names), *simCertificates)
	}

	certificates, duplicates, unreplaced, early := 0, 0, 0, 0
	var firstRenewals []time.Time
	firstIssued := map[time.Time]int{}
	for _, name := range names {
		certs := byName[name]
		certificates += len(certs)
		if orders := stats.Orders[name]; orders != len(certs) {
			duplicates += orders - len(certs)
			t.Errorf("%s: %d orders for %d certificates", name, orders, len(certs))
		}
		firstIssued[certs[0].NotBefore]++
		for i := 1; i < len(certs); i++ {
			previous, next := certs[i-1], certs[i]
			if next.Replaces != previous.CertID {
				unreplaced++
			}
			// The window starts a third of the lifetime before expiry (less a day at most).
			if earliest := previous.NotAfter.Add(-lifetime/3 - min(day, lifetime/20)); next.OrderedAt.Before(earliest) {
				early++
				t.Errorf("%s: renewed at %s, before the CA's window (from %s)", name, next.OrderedAt.Format(time.RFC3339), earliest.Format(time.RFC3339))
			}
		}
		if len(certs) > 1 {
			firstRenewals = append(firstRenewals, certs[1].OrderedAt)
		}
	}
	if unreplaced > 0 {
		t.Errorf("%s: %d renewals did not name the certificate they replace", profile, unreplaced)
	}

	var expired int
	var longest time.Duration
	for key, list := range sim.violations {
		if !strings.HasPrefix(key.Name, profile+"-") {
			continue
		}
		for _, v := range list {
			expired++
			longest = max(longest, v.to.Sub(v.from))
			// A 6-day certificate renews with two days left: one whose renewal fell early in
			// the outage expires in it, and is reissued at its next attempt after it.
			if lifetime >= 45*day || v.from.Before(outageStart) || v.from.After(outageEnd) {
				t.Errorf("%s: the Secret held a certificate that was %s from %s to %s", key.Name, v.reason,
					v.from.Format(time.RFC3339), v.to.Format(time.RFC3339))
				continue
			}
			t.Logf("%s: the Secret held a certificate that was %s from %s to %s, in the outage", key.Name, v.reason,
				v.from.Format(time.RFC3339), v.to.Format(time.RFC3339))
		}
	}

	spread := time.Duration(0)
	if len(firstRenewals) > 1 {
		slices.SortFunc(firstRenewals, func(a, b time.Time) int { return a.Compare(b) })
		spread = firstRenewals[len(firstRenewals)-1].Sub(firstRenewals[0])
	}
	sameSecond := 0
	for _, n := range firstIssued {
		sameSecond = max(sameSecond, n)
	}
	t.Logf("%-10s %3d days: %5d certificates, %5d orders (%d more than certificates), %.1f renewals per name; "+
		"served expired or not yet valid: %d times (longest %s); first renewals of %d certificates issued in the same second spread over %s (%.1f %% of the lifetime)",
		profile, int(lifetime/day), certificates, certificates+duplicates, duplicates, float64(certificates-len(names))/float64(max(len(names), 1)),
		expired, longest.Round(time.Minute), sameSecond, spread.Round(time.Minute), 100*float64(spread)/float64(lifetime))
	// Uniform draws from a window of 2.2 % of the lifetime (90 days, a day either side) all fall
	// within 1 % by chance: for 15 draws about once in 8,000 runs, for 5 once in 10. The check
	// needs a cohort.
	if len(firstRenewals) >= 15 && float64(spread) < 0.01*float64(lifetime) {
		t.Errorf("%s: the first renewals of certificates issued in the same second spread over %s, less than 1 %% of %s", profile, spread, lifetime)
	}
}

func sumFaults(faults map[acmetest.FaultKind]int) int {
	total := 0
	for _, n := range faults {
		total += n
	}
	return total
}

// registerIssuer runs the issuer reconciler until the issuer is Ready (it creates the account
// key and registers the account).
func registerIssuer(t *testing.T, ctx context.Context, issuers *controllers.IssuerReconciler, issuer *certpilotv1alpha1.Issuer) {
	t.Helper()
	request := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: issuer.Namespace, Name: issuer.Name}}
	for range 3 {
		if _, err := issuers.Reconcile(ctx, request); err != nil {
			t.Fatalf("Reconciling issuer %s: %v", issuer.Name, err)
		}
		if err := kube.Client.Get(ctx, request.NamespacedName, issuer); err != nil {
			t.Fatal(err)
		}
		if meta.IsStatusConditionTrue(issuer.Status.Conditions, certpilotv1alpha1.ConditionReady) {
			return
		}
	}
	t.Fatalf("Issuer %s is not Ready: %+v", issuer.Name, issuer.Status.Conditions)
}

// createNamespace creates a namespace with a generated name (envtest never removes namespaces,
// so names differ from run to run, also under -count).
func createNamespace(t *testing.T, ctx context.Context, prefix string) string {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}
	if err := kube.Client.Create(ctx, namespace); err != nil {
		t.Fatal(err)
	}
	return namespace.Name
}
