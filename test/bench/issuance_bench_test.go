// Package bench measures certpilot's issuance at scale against the floor: N Certificates applied
// at once on the real local environment (kube-apiserver with an audit log, etcd, Pebble, the
// built manager and edge), and in the same run a bare golang.org/x/crypto/acme client issuing N
// certificates against a Pebble configured the same way. `make bench` runs it and appends its
// results to docs/benchmarks-log.md, which explains the figures; docs/benchmarks.md has the latest
// of each workload.
//
// It is a benchmark, not a test: BenchmarkIssuance runs only with -bench and skips under -short.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// zone holds every name the benchmark issues for; BIND is authoritative for it in dns-01 runs.
const zone = "bench.test"

// BenchmarkIssuance: see the package comment and docs/benchmarks-log.md. Settings come from BENCH_*
// environment variables (config_test.go).
func BenchmarkIssuance(b *testing.B) {
	testenv.SkipIfShort(b)
	cfg, err := configFromEnv(os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	benchStarted := time.Now()
	// Ctrl-C ends the run through the cleanups, so no process is left behind.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	root, err := testenv.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	measured := revision(root) // before anything else can touch the tree
	dir := b.TempDir()
	progress("settings: %s (timeout %s per issuance)", cfg.command(), cfg.Timeout)
	// envtest logs through controller-runtime's logger; the benchmark prints its own lines.
	ctrllog.SetLogger(logr.Discard())

	managerBinary, edgeBinary := filepath.Join(dir, "manager"), filepath.Join(dir, "edge")
	buildCtx, cancelBuild := context.WithTimeout(ctx, 10*time.Minute)
	for pkg, output := range map[string]string{".": managerBinary, "./cmd/edge": edgeBinary} {
		if err := testenv.GoBuild(buildCtx, pkg, output); err != nil {
			cancelBuild()
			b.Fatal(err)
		}
	}
	cancelBuild()
	progress("built the manager and the edge in %s", time.Since(benchStarted).Round(time.Second))

	var bind *testenv.BIND
	pebbleOptions := testenv.PebbleOptions{AlwaysValid: cfg.AlwaysValid}
	if cfg.Solver == solverDNS01 {
		bind = testenv.StartBIND(b, zone)
		pebbleOptions.DNSServer = bind.Address
	}

	r := results{Config: cfg, Date: time.Now(), Machine: machine(), ManagerFlags: managerFlags(cfg.ManagerArgs),
		Revision: measured}
	if cfg.Floor {
		progress("resting %s before the floor", cfg.Rest)
		if err := sleep(ctx, cfg.Rest); err != nil {
			b.Fatal(err)
		}
		progress("floor: %d certificates with a bare x/crypto/acme client, %d at a time", cfg.N, cfg.Concurrency)
		floorPebble := testenv.StartPebble(b, pebbleOptions)
		floor, err := runFloor(ctx, cfg, floorPebble, bind, names("f", cfg.Names), nil)
		floorPebble.Stop() // before the manager's run: the two never share the CPU
		if err != nil {
			b.Fatal(err)
		}
		r.Floor = &floor
		progress("floor: all %d issued in %s", cfg.N, seconds(floor.Latency.All))
	}

	auditLog := filepath.Join(dir, "audit", "audit.log")
	kube, err := testenv.StartKubeWith(testenv.KubeOptions{AuditLogPath: auditLog})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := kube.Stop(); err != nil {
			b.Logf("stopping envtest: %v", err)
		}
	})
	if cfg.Floor && cfg.KubeFloor {
		r.KubeFloor = runKubeFloor(ctx, b, kube, cfg, pebbleOptions, bind)
	}
	pebble := testenv.StartPebble(b, pebbleOptions)
	stack, err := testenv.StartStack(ctx, kube, pebble, testenv.StackOptions{
		Namespace: "bench", ManagerBinary: managerBinary, EdgeBinary: edgeBinary, Dir: dir, ManagerArgs: cfg.ManagerArgs,
		EdgeArgs: cfg.EdgeArgs,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stack.Stop()
		if cfg.ManagerLog != "" {
			if err := os.WriteFile(cfg.ManagerLog, []byte(stack.Manager.Output()), 0o644); err != nil {
				b.Logf("writing the manager's log: %v", err)
			}
		}
		if b.Failed() {
			b.Logf("manager output (last lines):\n%s\nedge output (last lines):\n%s\nPebble output (last lines):\n%s",
				tail(stack.Manager.Output(), 60), tail(stack.Edge.Output(), 30), tail(pebble.Output(), 30))
		}
	})

	restConfig := rest.CopyConfig(kube.Config)
	restConfig.QPS = -1 // the harness itself is never the bottleneck: no client-side rate limit
	c, err := client.NewWithWatch(restConfig, client.Options{Scheme: kube.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	certificates, err := newCertificates(ctx, c, stack, bind, cfg)
	if err != nil {
		b.Fatal(err)
	}

	progress("stack up: manager, edge and a Ready ClusterIssuer; resting %s", cfg.Rest)
	if err := sleep(ctx, cfg.Rest); err != nil {
		b.Fatal(err)
	}
	atRest, err := readProc(stack.Manager.PID())
	if err != nil {
		b.Fatal(err)
	}
	edgeBefore, err := readProc(stack.Edge.PID())
	if err != nil {
		b.Fatal(err)
	}
	r.RestRSS = atRest.RSS
	statsBefore, err := scrapeReconcileStats(stack.MetricsAddress, "certificate")
	if err != nil {
		b.Fatal(err)
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	ready := newReadiness(cfg.N)
	go watchReady(watchCtx, restConfig, stack.Namespace, ready)
	if err := ready.waitSynced(ctx); err != nil {
		b.Fatal(err)
	}

	progress("certpilot: applying %d Certificates (%d at a time)", cfg.N, cfg.ApplyWorkers)
	processesBefore := processCPU()
	applied, err := applyAll(ctx, c, certificates, cfg.ApplyWorkers)
	if err != nil {
		b.Fatal(err)
	}
	firstApply := earliest(applied)
	r.ApplySpan = latest(applied).Sub(firstApply)
	progress("certpilot: applied in %s", seconds(r.ApplySpan))
	issueCtx, cancelIssue := context.WithDeadline(ctx, firstApply.Add(cfg.Timeout))
	err = waitAllReady(issueCtx, ready, stack, cfg.Stall)
	cancelIssue()
	r.Manager = summarize(applied, ready.snapshot())
	r.Processes = cpuSince(processesBefore, processCPU())
	if err != nil {
		b.Fatalf("%v; %d of %d Ready after %s; not Ready: %s", err, r.Manager.Count, cfg.N,
			time.Since(firstApply).Round(time.Second), notReady(ctx, c, stack.Namespace, 5))
	}
	progress("certpilot: all %d Ready in %s; settling %s, then an idle window of %s", cfg.N, seconds(r.Manager.All), cfg.Settle, cfg.Idle)

	if err := sleep(ctx, cfg.Settle); err != nil {
		b.Fatal(err)
	}
	idleStart := time.Now()
	atIdle, err := readProc(stack.Manager.PID())
	if err != nil {
		b.Fatal(err)
	}
	edgeAfter, err := readProc(stack.Edge.PID())
	if err != nil {
		b.Fatal(err)
	}
	r.IssueCPU, r.EdgeCPU, r.EdgePeakRSS = atIdle.CPU-atRest.CPU, edgeAfter.CPU-edgeBefore.CPU, edgeAfter.Peak
	statsAfter, err := scrapeReconcileStats(stack.MetricsAddress, "certificate")
	if err != nil {
		b.Fatal(err)
	}
	r.Reconciles = statsAfter.minus(statsBefore)
	if err := sleep(ctx, cfg.Idle); err != nil {
		b.Fatal(err)
	}
	idleEnd := time.Now()
	afterIdle, err := readProc(stack.Manager.PID())
	if err != nil {
		b.Fatal(err)
	}
	r.IdleCPU, r.RestRSSAfter, r.PeakRSS = afterIdle.CPU-atIdle.CPU, afterIdle.RSS, afterIdle.Peak
	stopWatch()

	events, err := testenv.ReadAuditLog(auditLog)
	if err != nil {
		b.Fatal(err)
	}
	r.ManagerSeen = r.Manager
	r.Manager = summarize(applied, readyCommitted(events, stack.Namespace, ready.snapshot()))
	r.Issuing = countRequests(events, firstApply, idleStart)
	r.Idle = countRequests(events, idleStart, idleEnd)
	if r.Issued, err = countIssued(ctx, c, stack.Namespace, certificates); err != nil {
		b.Fatal(err)
	}
	if r.Warnings, err = warnings(ctx, c, stack.Namespace); err != nil {
		b.Fatal(err)
	}
	r.Duration = time.Since(benchStarted)

	section := r.markdown()
	fmt.Println("\n" + section)
	if cfg.Record {
		path := reportPath(cfg, root)
		if err := appendReport(path, section); err != nil {
			b.Fatal(err)
		}
		progress("appended to %s", path)
	}
	if r.Issued != cfg.N {
		b.Errorf("%d certificate Secrets for %d Ready Certificates", r.Issued, cfg.N)
	}

	for b.Loop() {
		// One measurement per run: the metrics below are the result.
	}
	b.ReportMetric(r.Manager.All.Seconds(), "s-all-ready")
	if ratio := r.ratio(); ratio > 0 {
		b.ReportMetric(ratio, "x-floor")
	}
	if ratio := r.kubeRatio(); ratio > 0 {
		b.ReportMetric(ratio, "x-kube-floor")
	}
	b.ReportMetric(float64(r.PeakRSS)/(1<<20), "MiB-peak-rss")
	if manager := r.Issuing[managerClient]; manager != nil {
		b.ReportMetric(r.perCert(manager.Writes), "writes/cert")
	}
	idleWrites := 0
	if manager := r.Idle[managerClient]; manager != nil {
		idleWrites = manager.Writes
	}
	b.ReportMetric(float64(idleWrites), "idle-writes")
}

// BenchmarkFloor runs only the floor of BenchmarkIssuance, with the same BENCH_* settings, and
// records nothing: go test -run '^$' -bench '^BenchmarkFloor$' -benchtime 1x ./test/bench/
func BenchmarkFloor(b *testing.B) {
	testenv.SkipIfShort(b)
	cfg, err := configFromEnv(os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	var bind *testenv.BIND
	pebbleOptions := testenv.PebbleOptions{AlwaysValid: cfg.AlwaysValid}
	if cfg.Solver == solverDNS01 {
		bind = testenv.StartBIND(b, zone)
		pebbleOptions.DNSServer = bind.Address
	}
	pebble := testenv.StartPebble(b, pebbleOptions)
	floor, err := runFloor(ctx, cfg, pebble, bind, names("f", cfg.Names), nil)
	if err != nil {
		b.Fatal(err)
	}
	progress("floor: %d certificates in %s (p50 %s, p95 %s, first %s), CPU %s, %d started over",
		cfg.N, seconds(floor.Latency.All), seconds(floor.Latency.P50), seconds(floor.Latency.P95),
		seconds(floor.Latency.First), seconds(floor.CPU), floor.Retries)
	for b.Loop() {
		// One measurement per run.
	}
	b.ReportMetric(floor.Latency.All.Seconds(), "s-all-issued")
}

// names returns the DNS names of certificate i: <prefix><i>.bench.test and, for more names,
// <prefix><i>-<j>.bench.test. The floor and the manager use different prefixes.
func names(prefix string, perCertificate int) func(int) []string {
	return func(i int) []string {
		out := []string{fmt.Sprintf("%s%05d.%s", prefix, i, zone)}
		for j := 2; j <= perCertificate; j++ {
			out = append(out, fmt.Sprintf("%s%05d-%d.%s", prefix, i, j, zone))
		}
		return out
	}
}

// newCertificates builds the N Certificates (not yet created), with what their solver needs.
func newCertificates(ctx context.Context, c client.Client, stack *testenv.Stack, bind *testenv.BIND, cfg config) ([]*certpilotv1alpha1.Certificate, error) {
	key := &certpilotv1alpha1.PrivateKey{Algorithm: certpilotv1alpha1.KeyAlgorithmECDSA, Size: 256}
	if cfg.Key == keyRSA2048 {
		key = &certpilotv1alpha1.PrivateKey{Algorithm: certpilotv1alpha1.KeyAlgorithmRSA, Size: 2048}
	}
	var solver *certpilotv1alpha1.Solver
	if cfg.Solver == solverDNS01 {
		tsig := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "tsig", Namespace: stack.Namespace},
			Data:       map[string][]byte{"secret": []byte(bind.TSIGSecret)},
		}
		if err := c.Create(ctx, tsig); err != nil {
			return nil, err
		}
		solver = &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{RFC2136: &certpilotv1alpha1.RFC2136DNS01{
			Nameserver: bind.Address, TSIGKeyName: bind.TSIGKeyName, TSIGAlgorithm: bind.TSIGAlgorithm,
			TSIGSecretRef: certpilotv1alpha1.SecretKeySelector{Name: "tsig", Key: "secret"},
		}}}
	}
	nameOf := names("c", cfg.Names)
	certificates := make([]*certpilotv1alpha1.Certificate, cfg.N)
	for i := range cfg.N {
		cert := stack.TLSALPN01Certificate(fmt.Sprintf("c%05d", i), nameOf(i)...)
		cert.Spec.PrivateKey = key
		if solver != nil {
			cert.Spec.Solver = solver
		}
		certificates[i] = cert
	}
	return certificates, nil
}

// applyAll creates the Certificates, workers at a time, and returns when each create was sent.
func applyAll(ctx context.Context, c client.Client, certificates []*certpilotv1alpha1.Certificate, workers int) (map[string]time.Time, error) {
	applied := make(map[string]time.Time, len(certificates))
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	jobs := make(chan *certpilotv1alpha1.Certificate)
	for range workers {
		wg.Go(func() {
			for cert := range jobs {
				sent := time.Now()
				err := c.Create(ctx, cert)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("creating Certificate %s: %w", cert.Name, err)
				}
				applied[cert.Name] = sent
				mu.Unlock()
			}
		})
	}
	for _, cert := range certificates {
		jobs <- cert
	}
	close(jobs)
	wg.Wait()
	return applied, firstErr
}

// readiness records when each Certificate was first seen Ready.
type readiness struct {
	want     int
	mu       sync.Mutex
	readyAt  map[string]time.Time
	all      chan struct{} // closed when want Certificates are Ready
	synced   chan struct{} // closed after the first list
	syncOnce sync.Once
}

func newReadiness(want int) *readiness {
	return &readiness{want: want, readyAt: map[string]time.Time{}, all: make(chan struct{}), synced: make(chan struct{})}
}

// observe records that the Certificate name was seen, Ready (with a certificate) or not, at at.
func (r *readiness) observe(name string, ready bool, at time.Time) {
	if !ready {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, seen := r.readyAt[name]; seen {
		return
	}
	r.readyAt[name] = at
	if len(r.readyAt) == r.want {
		close(r.all)
	}
}

func (r *readiness) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.readyAt)
}

func (r *readiness) snapshot() map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Time, len(r.readyAt))
	for name, at := range r.readyAt {
		out[name] = at
	}
	return out
}

func (r *readiness) waitSynced(ctx context.Context) error {
	select {
	case <-r.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("the Certificate watch did not start in a minute")
	}
}

// waitAllReady waits until every Certificate is Ready, printing progress, and fails early when
// the manager or the edge exits or when no Certificate became Ready for stall (0: never).
// A CA that stops answering would otherwise show nothing until the timeout.
func waitAllReady(ctx context.Context, ready *readiness, stack *testenv.Stack, stall time.Duration) error {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	lastReport := time.Now()
	lastCount, lastChange := 0, time.Now()
	for {
		select {
		case <-ready.all:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("waiting for all Certificates to be Ready: %w", ctx.Err())
		case <-ticker.C:
		}
		for _, p := range []*testenv.Process{stack.Manager, stack.Edge} {
			if exited, err := p.Exited(); exited {
				return fmt.Errorf("the %s exited: %v", p.Name, err)
			}
		}
		if count := ready.count(); count != lastCount {
			lastCount, lastChange = count, time.Now()
		} else if stall > 0 && time.Since(lastChange) > stall {
			return fmt.Errorf("no Certificate became Ready in %s (is Pebble deadlocked? the failure output ends with its log)", stall)
		}
		if time.Since(lastReport) >= 30*time.Second {
			lastReport = time.Now()
			sample, _ := readProc(stack.Manager.PID())
			progress("certpilot: %d of %d Ready; manager RSS %s, CPU %s", ready.count(), ready.want, mib(sample.RSS), seconds(sample.CPU))
		}
	}
}

// notReady describes up to limit Certificates that are not Ready, for a failure message.
func notReady(ctx context.Context, c client.Client, namespace string, limit int) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	list := &certpilotv1alpha1.CertificateList{}
	if err := c.List(ctx, list, client.InNamespace(namespace)); err != nil {
		return err.Error()
	}
	var out []string
	for _, cert := range list.Items {
		if meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady) {
			continue
		}
		if len(out) == limit {
			out = append(out, "…")
			break
		}
		description := "no Ready condition"
		if ready := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReady); ready != nil {
			description = ready.Reason + ": " + ready.Message
		}
		out = append(out, fmt.Sprintf("%s (%s)", cert.Name, description))
	}
	return strings.Join(out, ", ")
}

// countIssued counts the certificates' Secrets (spec.secretName) in namespace, metadata only;
// the other Secrets certpilot keeps per Certificate (the claim, which holds the next key; the
// next-key Secret of earlier versions) carry the same label and are not counted.
func countIssued(ctx context.Context, c client.Client, namespace string, certificates []*certpilotv1alpha1.Certificate) (int, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := c.List(ctx, list, client.InNamespace(namespace), client.HasLabels{certpilotv1alpha1.LabelCertificate}); err != nil {
		return 0, err
	}
	secretNames := make(map[string]bool, len(certificates))
	for _, cert := range certificates {
		secretNames[cert.Spec.SecretName] = true
	}
	issued := 0
	for _, secret := range list.Items {
		if secretNames[secret.Name] {
			issued++
		}
	}
	return issued, nil
}

// warnings counts the Warning Events in namespace by reason, with one message of each.
func warnings(ctx context.Context, c client.Client, namespace string) (map[string]warning, error) {
	var events eventsv1.EventList
	if err := c.List(ctx, &events, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	out := map[string]warning{}
	for _, event := range events.Items {
		if event.Type != corev1.EventTypeWarning {
			continue
		}
		w := out[event.Reason]
		w.Count++
		if w.Example == "" {
			w.Example = event.Note
		}
		out[event.Reason] = w
	}
	return out, nil
}

func earliest(times map[string]time.Time) time.Time {
	var first time.Time
	for _, t := range times {
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	return first
}

func latest(times map[string]time.Time) time.Time {
	var last time.Time
	for _, t := range times {
		if t.After(last) {
			last = t
		}
	}
	return last
}

func managerFlags(args []string) string {
	if len(args) == 0 {
		return "main.go's defaults"
	}
	return "`" + strings.Join(args, " ") + "`"
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// progress prints a line at once (benchmark logs appear only when the benchmark ends).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
