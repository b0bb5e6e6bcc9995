package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// results is one run's measurements.
type results struct {
	Config  config
	Date    time.Time
	Machine string
	// Revision is the commit measured ("+ changes" when the tree differs from it).
	Revision string

	Floor *floorResult // nil when BENCH_FLOOR=0
	// KubeFloor is the Kubernetes floor's (kubeFloor); nil when not run.
	KubeFloor *floorResult
	// Manager is from each Certificate's create request to the apiserver's completion of the
	// status write that made it Ready (readyCommitted); ManagerSeen to when the benchmark's
	// watch saw it Ready.
	Manager, ManagerSeen latencies
	// ApplySpan is from the first Certificate's create request to the last one's.
	ApplySpan time.Duration
	Issued    int // certificate Secrets found afterwards
	// ManagerFlags describes BENCH_MANAGER_ARGS.
	ManagerFlags string
	Duration     time.Duration // the whole benchmark, builds included

	// Manager process: RSS at rest before applying and after the idle window, peak (VmHWM)
	// over the run, and CPU while issuing (apply to all Ready plus settle) and while idle.
	RestRSS, RestRSSAfter, PeakRSS int64
	IssueCPU, IdleCPU              time.Duration
	// Reconciles are the certificate controller's metrics over the issuing window.
	Reconciles reconcileStats
	// The edge's CPU while issuing and its peak RSS.
	EdgeCPU     time.Duration
	EdgePeakRSS int64
	// Processes is the CPU time of every process of the run from the first apply to the last
	// Ready, by name (processCPU): where the machine's cores went.
	Processes map[string]time.Duration

	// Warnings are the Warning Events of the run by reason.
	Warnings map[string]warning

	// API requests by client (user agent product) while issuing and during the idle window.
	Issuing, Idle map[string]*clientCounts
}

// warning is how often one Warning reason was recorded, and one of its messages.
type warning struct {
	Count   int
	Example string
}

// ratio is the manager's all-Ready time over the floor's.
func (r results) ratio() float64 {
	if r.Floor == nil || r.Floor.Latency.All == 0 {
		return 0
	}
	return r.Manager.All.Seconds() / r.Floor.Latency.All.Seconds()
}

// kubeRatio is the manager's all-Ready time over the Kubernetes floor's.
func (r results) kubeRatio() float64 {
	if r.KubeFloor == nil || r.KubeFloor.Latency.All == 0 {
		return 0
	}
	return r.Manager.All.Seconds() / r.KubeFloor.Latency.All.Seconds()
}

func (r results) perCert(n int) float64 { return float64(n) / float64(r.Config.N) }

// markdown renders the results as a dated section of docs/benchmarks-log.md.
func (r results) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s — %s\n\n", r.Date.UTC().Format("2006-01-02 15:04 MST"), r.Config.title())
	fmt.Fprintf(&b, "`%s`  \n", r.Config.command())
	fmt.Fprintf(&b, "certpilot %s. Machine: %s. Manager flags: %s. Benchmark took %s.\n", r.Revision, r.Machine, r.ManagerFlags, r.Duration.Round(time.Second))
	if r.Config.Note != "" {
		fmt.Fprintf(&b, "Note: %s\n", r.Config.Note)
	}
	b.WriteString("\n| | certpilot | floor (x/crypto/acme) |\n|---|---:|---:|\n")
	floor := func(f func(floorResult) string) string {
		if r.Floor == nil {
			return "—"
		}
		return f(*r.Floor)
	}
	row := func(name, certpilot, floorValue string) {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", name, certpilot, floorValue)
	}
	row("certificates issued", fmt.Sprintf("%d / %d", r.Issued, r.Config.N),
		floor(func(f floorResult) string { return fmt.Sprintf("%d / %d", f.Latency.Count, r.Config.N) }))
	if r.Floor != nil && r.Floor.Retries > 0 {
		row("certificates started over after an error", "", fmt.Sprint(r.Floor.Retries))
	}
	row("all Ready (first apply → last Ready)", seconds(r.Manager.All), floor(func(f floorResult) string { return seconds(f.Latency.All) }))
	row("applying (first → last create request)", seconds(r.ApplySpan), "")
	row("ratio to the floor", ratioString(r.ratio()), floor(func(floorResult) string { return "1" }))
	row("apply → Ready p50", seconds(r.Manager.P50), floor(func(f floorResult) string { return seconds(f.Latency.P50) }))
	row("apply → Ready p95", seconds(r.Manager.P95), floor(func(f floorResult) string { return seconds(f.Latency.P95) }))
	row("apply → Ready first", seconds(r.Manager.First), floor(func(f floorResult) string { return seconds(f.Latency.First) }))
	if r.ManagerSeen.Count > 0 {
		row("as the benchmark's watch saw them: all Ready, first", seconds(r.ManagerSeen.All)+", "+seconds(r.ManagerSeen.First), "")
	}
	row("CPU while issuing", seconds(r.IssueCPU)+" (manager) + "+seconds(r.EdgeCPU)+" (edge)",
		floor(func(f floorResult) string { return seconds(f.CPU) + " (client and responder)" }))
	row("manager RSS at rest, before → after", mib(r.RestRSS)+" → "+mib(r.RestRSSAfter), "")
	row("manager peak RSS (VmHWM)", mib(r.PeakRSS), "")
	row("edge peak RSS (VmHWM)", mib(r.EdgePeakRSS), "")
	row(fmt.Sprintf("manager CPU in the %s idle window", r.Config.Idle), seconds(r.IdleCPU), "")
	if k := r.KubeFloor; k != nil {
		fmt.Fprintf(&b, "\nFloor through the apiserver (the bare client also creates each Certificate before its order, "+
			"then its Secret and a Ready status, against the same apiserver; no controller, no watch): all %d in %s "+
			"(first %s, p50 %s, p95 %s), CPU %s (client and responder); certpilot's ratio to it: %s.\n",
			k.Latency.Count, seconds(k.Latency.All), seconds(k.Latency.First), seconds(k.Latency.P50), seconds(k.Latency.P95), seconds(k.CPU), ratioString(r.kubeRatio()))
	}

	if len(r.Processes) > 0 {
		window := r.Manager.All
		if r.ManagerSeen.Count > 0 {
			window = r.ManagerSeen.All // measured until the watch saw the last Ready
		}
		fmt.Fprintf(&b, "\nCPU by process, first apply to last Ready (%s of wall time): %s.\n", seconds(window), processList(r.Processes))
		if k := r.KubeFloor; k != nil && len(k.Processes) > 0 {
			fmt.Fprintf(&b, "The Kubernetes floor's, while it ran (%s): %s.\n", seconds(k.Latency.All), processList(k.Processes))
		}
	}

	if total := r.Reconciles.total(); total > 0 {
		var results []string
		for _, result := range []string{"success", "requeue_after", "requeue", "error"} {
			if n := r.Reconciles.Results[result]; n > 0 {
				results = append(results, fmt.Sprintf("%s %.2f", result, n/float64(r.Config.N)))
			}
		}
		queueWait := 0.0
		if r.Reconciles.Queued > 0 {
			queueWait = r.Reconciles.QueueSeconds / r.Reconciles.Queued
		}
		busy := 0.0
		if r.Manager.All > 0 && r.Reconciles.Workers > 0 {
			busy = r.Reconciles.ReconcileSeconds / (r.Manager.All.Seconds() * float64(r.Reconciles.Workers))
		}
		fmt.Fprintf(&b, "\nCertificate controller while issuing (its metrics): %.2f reconciles per certificate (%s), "+
			"%.1f ms per reconcile, %.1f ms queue wait per item; its %d workers were busy %.0f %% of the time until all were Ready.\n",
			total/float64(r.Config.N), strings.Join(results, ", "), 1000*r.Reconciles.ReconcileSeconds/total,
			1000*queueWait, r.Reconciles.Workers, 100*busy)
		if len(r.Reconciles.Spent) > 0 {
			whats := sortedKeys(r.Reconciles.Spent)
			var parts []string
			for _, what := range whats {
				if ms := 1000 * r.Reconciles.Spent[what] / float64(r.Config.N); ms >= 1 {
					parts = append(parts, fmt.Sprintf("%s %.0f", what, ms))
				}
			}
			fmt.Fprintf(&b, "Where the time went, in ms per certificate (requests and self-checks, summed, all controllers): %s.\n", strings.Join(parts, ", "))
		}
		if len(r.Reconciles.ACMERequests) > 0 {
			var parts []string
			total := 0.0
			for _, endpoint := range sortedKeys(r.Reconciles.ACMERequests) {
				n := r.Reconciles.ACMERequests[endpoint]
				total += n
				if n > 0 {
					parts = append(parts, fmt.Sprintf("%s %.2f", endpoint, n/float64(r.Config.N)))
				}
			}
			fmt.Fprintf(&b, "Requests to the CA per certificate: %.2f (%s).\n", total/float64(r.Config.N), strings.Join(parts, ", "))
		}
		if len(r.Reconciles.Requeues) > 0 {
			var parts []string
			for _, reason := range sortedKeys(r.Reconciles.Requeues) {
				if n := r.Reconciles.Requeues[reason]; n > 0 {
					parts = append(parts, fmt.Sprintf("%s %.2f", reason, n/float64(r.Config.N)))
				}
			}
			if len(parts) > 0 {
				fmt.Fprintf(&b, "Why reconciles ended to look again, per certificate: %s.\n", strings.Join(parts, ", "))
			}
		}
		if checks := r.Reconciles.SelfChecks["success"] + r.Reconciles.SelfChecks["failure"]; checks > 0 {
			fmt.Fprintf(&b, "Self-checks: %.0f, of which %.0f failed (a response the load balancer did not serve yet, after its 3 s of retries).\n",
				checks, r.Reconciles.SelfChecks["failure"])
		}
		if presents, removals := r.Reconciles.ShardWrites["presents"], r.Reconciles.ShardWrites["removals"]; presents+removals > 0 {
			fmt.Fprintf(&b, "Challenge shard writes (the manager's count, retries included): %.0f carrying presents, for %.0f Puts (%.2f per write), and %.0f carrying only removals.\n",
				presents, r.Reconciles.ShardPuts, r.Reconciles.ShardPuts/max(presents, 1), removals)
		}
	}
	if len(r.Warnings) > 0 {
		counts := map[string]int{}
		for reason, w := range r.Warnings {
			counts[reason] = w.Count
		}
		var parts []string
		for _, reason := range sortedKeys(counts) {
			parts = append(parts, fmt.Sprintf("%s ×%d (%q)", reason, counts[reason], r.Warnings[reason].Example))
		}
		fmt.Fprintf(&b, "\nWarning Events: %s.\n", strings.Join(parts, ", "))
	}
	b.WriteString("\nAPI requests by client (audit log, user agent), per certificate, while issuing; writes in the idle window:\n\n")
	b.WriteString("| client | requests | writes | requests / cert | writes / cert | idle writes |\n|---|---:|---:|---:|---:|---:|\n")
	for _, client := range r.clients() {
		issuing, idle := r.Issuing[client], r.Idle[client]
		if issuing == nil {
			issuing = &clientCounts{}
		}
		idleWrites := 0
		if idle != nil {
			idleWrites = idle.Writes
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %.2f | %.2f | %d |\n", client, issuing.Requests, issuing.Writes,
			r.perCert(issuing.Requests), r.perCert(issuing.Writes), idleWrites)
	}
	if manager := r.Issuing[managerClient]; manager != nil && manager.Writes > 0 {
		b.WriteString("\nThe manager's writes per certificate: ")
		var parts []string
		for _, what := range sortedKeys(manager.WritesBy) {
			parts = append(parts, fmt.Sprintf("%s %.2f", what, r.perCert(manager.WritesBy[what])))
		}
		b.WriteString(strings.Join(parts, ", ") + ".\n")
	}
	if idle := r.Idle[managerClient]; idle != nil && idle.Writes > 0 {
		b.WriteString("In the idle window: ")
		var parts []string
		for _, what := range sortedKeys(idle.WritesBy) {
			parts = append(parts, fmt.Sprintf("%s %d", what, idle.WritesBy[what]))
		}
		b.WriteString(strings.Join(parts, ", ") + ".\n")
	}
	return b.String()
}

// edgeClient is the edge's user agent (cmd/edge sets it); managerClient the manager's (its file
// name).
const (
	edgeClient    = "certpilot-edge"
	managerClient = "manager"
)

// clients lists the clients seen, certpilot's first.
func (r results) clients() []string {
	seen := map[string]bool{"manager": true, edgeClient: true}
	for client := range r.Issuing {
		seen[client] = true
	}
	for client := range r.Idle {
		seen[client] = true
	}
	var clients []string
	for _, first := range []string{"manager", edgeClient} {
		if seen[first] {
			clients = append(clients, first)
			delete(seen, first)
		}
	}
	var rest []string
	for client := range seen {
		rest = append(rest, client)
	}
	slices.Sort(rest)
	return append(clients, rest...)
}

func seconds(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func mib(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }

func ratioString(ratio float64) string {
	if ratio == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", ratio)
}

// reportHeader starts docs/benchmarks-log.md.
const reportHeader = `# Benchmark log: issuance at scale against the floor

Every ` + "`make bench`" + ` run appends its section here; docs/benchmarks.md has the latest figure of each
workload.

` + "`make bench`" + ` (the harness is ` + "`test/bench/`" + `, ` + "`BenchmarkIssuance`" + `) applies N Certificates at
once on the real local environment — kube-apiserver and etcd, Pebble, the built manager and the
built edge, all on 127.0.0.1 — and, in the same run and before it, issues N certificates with a
bare golang.org/x/crypto/acme client against a Pebble configured the same way, with the same kind
of names, key type and solver, BENCH_CONCURRENCY at a time: the floor, what ACME and the CA cost
with nothing of Kubernetes. The floor serves tls-alpn-01 from a small responder of its own on its
Pebble's TLS port, and dns-01 with RFC 2136 updates to the same BIND. It waits on the order rather
than on each authorization.

A second floor runs after the apiserver is up and before the manager starts (BENCH_KUBE_FLOOR,
on by default): the same bare client, which also creates each Certificate before its order and,
once issued, its Secret and a Ready status, against the same apiserver (no controller, no watch,
no Event; ` + "`kubeFloor`" + ` in ` + "`test/bench/kubefloor_test.go`" + `). It is the least any Kubernetes
controller of Certificates costs; the report gives certpilot's ratio to it as well.

Both sides talk to Pebble directly. The Pebble the project builds carries one patch
(` + "`hack/pebble/orders-guard.patch`" + `): new-order requests run alone and authorization requests never
beside one, since Pebble v2.10.3 deadlocks otherwise when new-orders run at once (at N=1000 with
100 clients). Runs recorded before 2026-12-07 07:00 UTC applied the same rule outside Pebble: in
the floor's HTTP transport, and for the manager in a loopback HTTPS proxy, which cost certpilot's
run about 2 s of CPU per 1,000 certificates that the floor did not pay.

` + "```console" + `
make bench                                     # N=200 tls-alpn-01, ECDSA P-256, one name, 1m idle window
make bench BENCH_N=1000                        # the 1,000-certificate target
make bench BENCH_N=10000 BENCH_ALWAYS_VALID=1 BENCH_FLOOR=0 BENCH_IDLE=5m   # memory at scale
make bench BENCH_N=100 BENCH_SOLVER=dns-01 BENCH_KEY=rsa2048
make bench BENCH_MANAGER_ARGS="--certificate-workers 128"   # flags passed to the manager
` + "```" + `

Variables: BENCH_N (certificates), BENCH_SOLVER (tls-alpn-01 | dns-01), BENCH_KEY (ecdsa |
rsa2048), BENCH_NAMES (names per certificate), BENCH_ALWAYS_VALID=1 (Pebble's
PEBBLE_VA_ALWAYS_VALID: challenges are presented but not checked, so the controller's own cost
remains), BENCH_CONCURRENCY (the floor's workers, default 100), BENCH_IDLE (idle window, default
1m), BENCH_FLOOR=0 (skip the floors), BENCH_KUBE_FLOOR=0 (skip the floor through the apiserver), BENCH_MANAGER_ARGS, BENCH_TIMEOUT (bound on each issuance,
default 5m + 1 s per certificate), BENCH_STALL (end the run when no Certificate became Ready for
so long, default 5m, 0 never), BENCH_RECORD=0 (do not append here), BENCH_NOTE (recorded text),
BENCH_MANAGER_LOG (a file for the manager's log, written after the run), BENCH_EDGE_ARGS (flags
passed to the edge).

What the columns mean:

- **all Ready**: from the first Certificate's create request to the last Certificate's Ready:
  when the apiserver completed the manager's status write that made it Ready (from the audit
  log; a watch on Certificates says when each became Ready and the log which write did it),
  as the Kubernetes floor's Ready is when its status write returns. The watch's own times,
  which add the delivery to a benchmark process busy applying, are the row "as the benchmark's
  watch saw them". For the ACME floor, from the start to the last certificate downloaded.
  **ratio**: certpilot's all-Ready time over the floor's.
- **apply → Ready p50 / p95 / first**: per certificate, from its own create request to Ready
  (the floor: from the start, as all its certificates are queued at once).
- **CPU while issuing**: user + system seconds of the manager (and of the edge) from the first
  apply until the idle window starts (/proc/<pid>/stat); the floor's is the benchmark process's own.
- **CPU by process**: user + system seconds of every process of the run (the benchmark itself,
  which applies and watches, and its children: kube-apiserver, etcd, Pebble, the manager, the
  edge) from the first apply to the last Ready, and the same for the Kubernetes floor while it
  ran: on a machine whose cores are all busy, the sum sets the pace.
- **Requests to the CA per certificate** by endpoint (the manager's
  certpilot_acme_requests_total), and **why reconciles ended to look again**
  (certpilot_certificate_requeues_total by reason, per certificate).
- **RSS at rest**: the manager's VmRSS after it has idled BENCH_REST (10 s) with a Ready
  ClusterIssuer and no Certificates, and again after the idle window; **peak** is its VmHWM.
- **requests / writes per certificate per client**: from the apiserver's audit log (level Metadata),
  grouped by user agent (the manager's starts with "manager/", the edge's is "certpilot-edge",
  the harness's own starts with "bench.test/"; rows named "edge" before 2026-12-01 15:40 UTC
  counted nothing, the edge's requests are in their "certpilot-edge" row), from the first apply until the idle window starts (all Ready
  plus BENCH_SETTLE, 30 s: the challenge cleanups of the last certificates, written at most RemovalDelay (20 s) later, are counted), divided by N. Writes are create, update, patch, delete and
  deletecollection, Events included. The breakdown of the manager's writes tells the challenge
  shard Secrets ("secrets (challenge shards)") apart from its other Secrets.
- **idle writes**: writes in the BENCH_IDLE window that starts BENCH_SETTLE after all Ready.
- **Certificate controller**: controller-runtime's metrics from the manager's /metrics over the
  issuing window: reconciles per certificate by result, mean time in Reconcile, mean wait in the
  work queue, and how busy the workers were (time in Reconcile over workers × all-Ready time;
  near 100 % the workers are the bottleneck).

Nothing here is a pass/fail test; the targets the numbers are compared with live in the issues.
The Go micro-benchmarks and the manager memory benchmark (docs/bench-memory.md) run with
` + "`make bench-go`" + `.

`

// appendReport appends the section to path, creating the file with its header.
func appendReport(path, section string) error {
	if _, err := os.Stat(path); os.IsNotExist(err) {
		if err := os.WriteFile(path, []byte(reportHeader), 0o644); err != nil {
			return err
		}
	}
	file, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := file.WriteString("\n" + section); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}

// machine describes the machine: CPU model and count, memory, Go version.
func machine() string {
	model := ""
	if file, err := os.Open("/proc/cpuinfo"); err == nil {
		scanner := bufio.NewScanner(file)
		for scanner.Scan() {
			if key, value, ok := strings.Cut(scanner.Text(), ":"); ok && strings.TrimSpace(key) == "model name" {
				model = strings.TrimSpace(value)
				break
			}
		}
		file.Close()
	}
	memory := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "MemTotal:" {
				var kib int64
				fmt.Sscan(fields[1], &kib)
				memory = fmt.Sprintf(", %.0f GiB", float64(kib)/(1<<20))
			}
		}
	}
	load := ""
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if fields := strings.Fields(string(data)); len(fields) >= 3 {
			// Other work on the machine skews every figure: say how busy it was.
			load = fmt.Sprintf(", load average %s %s %s at the start", fields[0], fields[1], fields[2])
		}
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s, %d CPUs (%s)%s, %s %s/%s%s", host, runtime.NumCPU(), model, memory, runtime.Version(), runtime.GOOS, runtime.GOARCH, load)
}

// revision is the repository's commit, with "+ changes" when the tree (other than the report)
// differs from it, or "unknown revision" outside git.
func revision(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown revision"
	}
	rev := strings.TrimSpace(string(out))
	status, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/benchmarks-log.md").Output()
	if err == nil && len(strings.TrimSpace(string(status))) > 0 {
		rev += " + changes"
	}
	return rev
}

// reportPath is BENCH_REPORT or docs/benchmarks-log.md in the repository.
func reportPath(cfg config, root string) string {
	if cfg.Report != "" {
		return cfg.Report
	}
	return filepath.Join(root, "docs", "benchmarks-log.md")
}

func TestMarkdown(t *testing.T) {
	cfg, err := configFromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	r := results{
		Config: cfg, Date: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Machine: "test",
		Floor:     &floorResult{Latency: latencies{All: 10 * time.Second, Count: 200}},
		KubeFloor: &floorResult{Latency: latencies{All: 20 * time.Second, Count: 200}},
		Issued:    200,
		Issuing: map[string]*clientCounts{
			"manager":    {Requests: 2000, Writes: 1000, WritesBy: map[string]int{"patch certificates/status": 600, "create events": 400}},
			"bench.test": {Requests: 210, Writes: 200},
		},
		Idle:     map[string]*clientCounts{"manager": {Requests: 3, Writes: 1, WritesBy: map[string]int{"update leases": 1}}},
		Warnings: map[string]warning{"ACMEError": {Count: 2, Example: "the CA said no"}},
		Manager:  latencies{All: 50 * time.Second, Count: 200},
		Reconciles: reconcileStats{Results: map[string]float64{"success": 1000, "requeue_after": 400}, ReconcileSeconds: 140,
			QueueSeconds: 7, Queued: 1400, Workers: 4,
			ShardWrites: map[string]float64{"presents": 150, "removals": 50}, ShardPuts: 200},
	}
	got := r.markdown()
	for _, want := range []string{
		"## 2026-12-01 10:00 UTC — N=200 tls-alpn-01, ECDSA P-256, 1 name(s) each",
		"`make bench BENCH_N=200 BENCH_SOLVER=tls-alpn-01",
		"| ratio to the floor | 5.00× | 1 |",
		"no controller, no watch): all 200 in 20.0 s",
		"certpilot's ratio to it: 2.50×.",
		"| manager | 2000 | 1000 | 10.00 | 5.00 | 1 |",
		"patch certificates/status 3.00, create events 2.00",
		"In the idle window: update leases 1.",
		"150 carrying presents, for 200 Puts (1.33 per write), and 50 carrying only removals.",
		`Warning Events: ACMEError ×2 ("the CA said no").`,
		"7.00 reconciles per certificate (success 5.00, requeue_after 2.00), 100.0 ms per reconcile, 5.0 ms queue wait per item; its 4 workers were busy 70 %",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("markdown lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "| manager |") > strings.Index(got, "| bench.test |") {
		t.Errorf("the manager's row is not first:\n%s", got)
	}
}

// processList lists CPU times by process, largest first.
func processList(cpu map[string]time.Duration) string {
	names := make([]string, 0, len(cpu))
	var total time.Duration
	for name, d := range cpu {
		names = append(names, name)
		total += d
	}
	sort.Slice(names, func(i, j int) bool { return cpu[names[i]] > cpu[names[j]] })
	parts := make([]string, 0, len(names)+1)
	for _, name := range names {
		parts = append(parts, name+" "+seconds(cpu[name]))
	}
	return strings.Join(parts, ", ") + "; total " + seconds(total)
}
