package bench

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on every Linux
// architecture Go supports (it is fixed by the kernel ABI, unlike CONFIG_HZ).
const clockTicks = 100

// procSample is what /proc says about a process at one moment.
type procSample struct {
	// RSS is VmRSS, the resident memory now; Peak is VmHWM, the most it has been resident.
	RSS, Peak int64
	// CPU is user plus system time since the process started.
	CPU time.Duration
}

// readProc reads /proc/<pid>/status and /proc/<pid>/stat.
func readProc(pid int) (procSample, error) {
	var s procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		kib, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			s.RSS = kib << 10
		case "VmHWM:":
			s.Peak = kib << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may hold spaces and parentheses: count fields after the last ")".
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	fields := strings.Fields(rest) // fields[0] is field 3 (state); utime is 14, stime 15
	if len(fields) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, fields[11], fields[12])
	}
	s.CPU = time.Duration(utime+stime) * time.Second / clockTicks
	return s, nil
}

// processCPU is the CPU time of this process ("bench") and of each of its child processes, by
// command name (kube-apiserver, etcd, pebble, manager, edge; same-named children summed).
func processCPU() map[string]time.Duration {
	cpu := map[string]time.Duration{"bench": selfCPU()}
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return cpu
	}
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		open, closing := strings.IndexByte(string(stat), '('), strings.LastIndexByte(string(stat), ')')
		if open < 0 || closing < open {
			continue
		}
		fields := strings.Fields(string(stat[closing+1:])) // fields[1] is field 4 (ppid)
		if len(fields) < 13 {
			continue
		}
		if ppid, err := strconv.Atoi(fields[1]); err != nil || ppid != self {
			continue
		}
		utime, err1 := strconv.ParseInt(fields[11], 10, 64)
		stime, err2 := strconv.ParseInt(fields[12], 10, 64)
		if err1 == nil && err2 == nil {
			cpu[string(stat[open+1:closing])] += time.Duration(utime+stime) * time.Second / clockTicks
		}
	}
	return cpu
}

// cpuSince is what each process in after spent since before (a process that started in between
// counts whole).
func cpuSince(before, after map[string]time.Duration) map[string]time.Duration {
	spent := map[string]time.Duration{}
	for name, cpu := range after {
		if d := cpu - before[name]; d > 0 {
			spent[name] = d
		}
	}
	return spent
}

// readyCommitted returns, for each Certificate seen Ready (seen: when the benchmark's watch saw
// it), when the apiserver completed the status write that made it Ready: the latest successful
// status write of that Certificate by the manager that had completed when the watch saw it.
// The floor's Ready is when its own status write returns; the watch adds its delivery to a
// benchmark process that is busy applying, which is not certpilot's time. A Certificate
// without such a write in the log keeps the watch's time.
func readyCommitted(events []testenv.AuditEvent, namespace string, seen map[string]time.Time) map[string]time.Time {
	committed := make(map[string]time.Time, len(seen))
	for name, at := range seen {
		committed[name] = at
	}
	latest := make(map[string]time.Time, len(seen))
	for _, e := range events {
		if e.Client() != managerClient || e.Verb != "patch" && e.Verb != "update" || e.Resource != "certificates" ||
			e.Subresource != "status" || e.Namespace != namespace || e.Code < 200 || e.Code > 299 {
			continue
		}
		at, ok := seen[e.Name]
		if !ok || e.Completed.IsZero() || e.Completed.After(at) {
			continue
		}
		if e.Completed.After(latest[e.Name]) {
			latest[e.Name] = e.Completed
		}
	}
	for name, at := range latest {
		committed[name] = at
	}
	return committed
}

// latencies summarises how long each certificate took, from its own start.
type latencies struct {
	// All is from the first start to the last certificate; First, P50, P95 and Max are per
	// certificate.
	All, First, P50, P95, Max time.Duration
	Count                     int
}

// summarize computes latencies from each certificate's start and finish.
func summarize(starts, finishes map[string]time.Time) latencies {
	var durations []time.Duration
	var first, last time.Time
	for name, finish := range finishes {
		start, ok := starts[name]
		if !ok {
			continue
		}
		durations = append(durations, finish.Sub(start))
		if last.IsZero() || finish.After(last) {
			last = finish
		}
	}
	for _, start := range starts {
		if first.IsZero() || start.Before(first) {
			first = start
		}
	}
	if len(durations) == 0 {
		return latencies{}
	}
	slices.Sort(durations)
	return latencies{
		All:   last.Sub(first),
		First: durations[0],
		P50:   percentile(durations, 50),
		P95:   percentile(durations, 95),
		Max:   durations[len(durations)-1],
		Count: len(durations),
	}
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

// clientCounts are one client's API requests in a window.
type clientCounts struct {
	Requests, Writes int
	// WritesBy counts writes by what they wrote (writeKind).
	WritesBy map[string]int
}

// writeKind is "verb resource[/subresource]", with the challenge shard Secrets of the edge
// told apart from the other Secrets: "patch secrets (challenge shards)".
func writeKind(event testenv.AuditEvent) string {
	kind := event.Verb + " " + event.ResourcePath()
	if event.Resource == "secrets" && event.Subresource == "" &&
		strings.HasPrefix(event.Name, certpilotv1alpha1.ChallengeSecretName(testenv.EdgeDeployment)+"-") {
		kind += " (challenge shards)"
	}
	return kind
}

// countRequests counts the audit events received in [from, to) by client (the user agent's
// product: manager, edge, bench.test, kube-apiserver).
func countRequests(events []testenv.AuditEvent, from, to time.Time) map[string]*clientCounts {
	counts := map[string]*clientCounts{}
	for _, event := range events {
		if event.Received.Before(from) || !event.Received.Before(to) {
			continue
		}
		c := counts[event.Client()]
		if c == nil {
			c = &clientCounts{WritesBy: map[string]int{}}
			counts[event.Client()] = c
		}
		c.Requests++
		if event.IsWrite() {
			c.Writes++
			c.WritesBy[writeKind(event)]++
		}
	}
	return counts
}

// sortedKeys returns m's keys, the largest value first, then by name.
func sortedKeys[V int | float64](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

func TestPercentile(t *testing.T) {
	sorted := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for p, want := range map[int]time.Duration{50: 5, 95: 10, 10: 1, 100: 10, 1: 1} {
		if got := percentile(sorted, p); got != want {
			t.Errorf("p%d = %d, want %d", p, got, want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %d", got)
	}
}

func TestSummarize(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	starts := map[string]time.Time{"a": t0, "b": t0.Add(time.Second), "c": t0.Add(2 * time.Second)}
	finishes := map[string]time.Time{"a": t0.Add(10 * time.Second), "b": t0.Add(3 * time.Second)}
	got := summarize(starts, finishes)
	want := latencies{All: 10 * time.Second, First: 2 * time.Second, P50: 2 * time.Second, P95: 10 * time.Second,
		Max: 10 * time.Second, Count: 2}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
}

func TestCountRequests(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	events := []testenv.AuditEvent{
		{Verb: "get", UserAgent: "manager/v0.0.0 (linux/amd64) kubernetes/$Format", Resource: "secrets", Received: t0},
		{Verb: "patch", UserAgent: "manager/v0.0.0", Resource: "certificates", Subresource: "status", Received: t0.Add(time.Second)},
		{Verb: "patch", UserAgent: "manager/v0.0.0", Resource: "certificates", Subresource: "status", Received: t0.Add(2 * time.Second)},
		{Verb: "create", UserAgent: "bench.test/v0.0.0", Resource: "certificates", Received: t0},
		{Verb: "patch", UserAgent: "manager/v0.0.0", Resource: "secrets", Name: "edge-acme-challenges-07", Received: t0.Add(3 * time.Second)},
		{Verb: "patch", UserAgent: "manager/v0.0.0", Resource: "secrets", Name: "c00001-tls", Received: t0.Add(3 * time.Second)},
		{Verb: "update", UserAgent: "manager/v0.0.0", Resource: "secrets", Received: t0.Add(5 * time.Second)}, // outside
		{Verb: "watch", UserAgent: "certpilot-edge", Resource: "secrets", Received: t0.Add(-time.Second)},     // before
	}
	counts := countRequests(events, t0, t0.Add(5*time.Second))
	manager := counts["manager"]
	if manager == nil || manager.Requests != 5 || manager.Writes != 4 || manager.WritesBy["patch certificates/status"] != 2 ||
		manager.WritesBy["patch secrets (challenge shards)"] != 1 || manager.WritesBy["patch secrets"] != 1 {
		t.Errorf("manager counts %+v", manager)
	}
	if bench := counts["bench.test"]; bench == nil || bench.Writes != 1 {
		t.Errorf("bench.test counts %+v", bench)
	}
	if _, ok := counts[edgeClient]; ok {
		t.Errorf("the edge's request before the window was counted")
	}
}

func TestReadyCommitted(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	status := func(name string, completed time.Duration, code int) testenv.AuditEvent {
		return testenv.AuditEvent{Verb: "patch", UserAgent: "manager/v0.0.0", Resource: "certificates", Subresource: "status",
			Namespace: "bench", Name: name, Code: code, Completed: t0.Add(completed)}
	}
	events := []testenv.AuditEvent{
		status("a", 1*time.Second, 200),
		status("a", 2*time.Second, 200), // the write that made a Ready
		status("a", 4*time.Second, 200), // after the watch saw a Ready
		status("b", 1*time.Second, 409), // refused
		{Verb: "patch", UserAgent: "bench.test/v0.0.0", Resource: "certificates", Subresource: "status",
			Namespace: "bench", Name: "c", Code: 200, Completed: t0.Add(time.Second)}, // not the manager's
		status("d", time.Second, 200), // another namespace below
	}
	events[len(events)-1].Namespace = "other"
	seen := map[string]time.Time{"a": t0.Add(3 * time.Second), "b": t0.Add(3 * time.Second), "c": t0.Add(3 * time.Second), "d": t0.Add(3 * time.Second)}
	got := readyCommitted(events, "bench", seen)
	want := map[string]time.Time{"a": t0.Add(2 * time.Second), "b": t0.Add(3 * time.Second), "c": t0.Add(3 * time.Second), "d": t0.Add(3 * time.Second)}
	if len(got) != len(want) {
		t.Fatalf("readyCommitted = %v, want %v", got, want)
	}
	for name, at := range want {
		if !got[name].Equal(at) {
			t.Errorf("%s: %s, want %s", name, got[name].Sub(t0), at.Sub(t0))
		}
	}
}

// reconcileStats are controller-runtime's metrics for one controller, from the manager's
// /metrics: how often it reconciled, how long reconciles took and how long items queued.
type reconcileStats struct {
	// Results counts reconciles by result: success, error, requeue, requeue_after.
	Results map[string]float64
	// ReconcileSeconds is the time spent in Reconcile, summed over workers.
	ReconcileSeconds float64
	// QueueSeconds and Queued: time items waited in the work queue before a worker took them.
	QueueSeconds, Queued float64
	// Workers is the controller's MaxConcurrentReconciles (whatever flag sets it).
	Workers int
	// Spent is the time the manager's requests and checks took, summed over all of them, by
	// what they were ("acme newOrder", "apiserver PATCH", "self-check tls-alpn-01"): where the
	// reconciles' time went. Requests of every controller are included.
	Spent map[string]float64
	// SelfChecks counts the self-checks of challenge responses by result (success, failure).
	SelfChecks map[string]float64
	// ShardWrites counts the writes of challenge shard Secrets by what they carried (presents,
	// removals); ShardPuts the Puts (one per Present and shard) they carried.
	ShardWrites map[string]float64
	ShardPuts   float64
	// Requeues counts the reconciles that ended to look again, by reason
	// (certpilot_certificate_requeues_total).
	Requeues map[string]float64
	// ACMERequests counts the requests to the CA by endpoint (certpilot_acme_requests_total).
	ACMERequests map[string]float64
}

func (s reconcileStats) total() float64 {
	var total float64
	for _, n := range s.Results {
		total += n
	}
	return total
}

// minus is s - before, for the counters of a window.
func (s reconcileStats) minus(before reconcileStats) reconcileStats {
	out := reconcileStats{Results: map[string]float64{}, Spent: map[string]float64{}, SelfChecks: map[string]float64{},
		ShardWrites: map[string]float64{}, Requeues: map[string]float64{}, ACMERequests: map[string]float64{}, ShardPuts: s.ShardPuts - before.ShardPuts,
		ReconcileSeconds: s.ReconcileSeconds - before.ReconcileSeconds,
		QueueSeconds:     s.QueueSeconds - before.QueueSeconds, Queued: s.Queued - before.Queued, Workers: s.Workers}
	for result, n := range s.Results {
		out.Results[result] = n - before.Results[result]
	}
	for what, seconds := range s.Spent {
		out.Spent[what] = seconds - before.Spent[what]
	}
	for result, n := range s.SelfChecks {
		out.SelfChecks[result] = n - before.SelfChecks[result]
	}
	for what, n := range s.ShardWrites {
		out.ShardWrites[what] = n - before.ShardWrites[what]
	}
	for reason, n := range s.Requeues {
		out.Requeues[reason] = n - before.Requeues[reason]
	}
	for endpoint, n := range s.ACMERequests {
		out.ACMERequests[endpoint] = n - before.ACMERequests[endpoint]
	}
	return out
}

// scrapeReconcileStats reads controller's metrics from the manager at address.
func scrapeReconcileStats(address, controller string) (reconcileStats, error) {
	stats := reconcileStats{Results: map[string]float64{}, Spent: map[string]float64{}, SelfChecks: map[string]float64{},
		ShardWrites: map[string]float64{}, Requeues: map[string]float64{}, ACMERequests: map[string]float64{}}
	response, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + address + "/metrics")
	if err != nil {
		return stats, err
	}
	defer response.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(response.Body)
	if err != nil {
		return stats, err
	}
	ours := func(metric *dto.Metric) bool {
		for _, pair := range metric.GetLabel() {
			if (pair.GetName() == "controller" || pair.GetName() == "name") && pair.GetValue() == controller {
				return true
			}
		}
		return false
	}
	label := func(metric *dto.Metric, name string) string {
		for _, pair := range metric.GetLabel() {
			if pair.GetName() == name {
				return pair.GetValue()
			}
		}
		return ""
	}
	for _, metric := range families["controller_runtime_reconcile_total"].GetMetric() {
		if ours(metric) {
			stats.Results[label(metric, "result")] += metric.GetCounter().GetValue()
		}
	}
	for _, metric := range families["controller_runtime_max_concurrent_reconciles"].GetMetric() {
		if ours(metric) {
			stats.Workers = int(metric.GetGauge().GetValue())
		}
	}
	for _, metric := range families["controller_runtime_reconcile_time_seconds"].GetMetric() {
		if ours(metric) {
			stats.ReconcileSeconds += metric.GetHistogram().GetSampleSum()
		}
	}
	for family, prefix := range map[string]struct{ what, label string }{
		"certpilot_acme_request_duration_seconds":         {"acme", "endpoint"},
		"certpilot_kube_api_request_duration_seconds":     {"apiserver", "method"},
		"certpilot_challenge_self_check_duration_seconds": {"self-check", "type"},
	} {
		for _, metric := range families[family].GetMetric() {
			stats.Spent[prefix.what+" "+label(metric, prefix.label)] += metric.GetHistogram().GetSampleSum()
		}
	}
	for _, metric := range families["certpilot_challenge_self_checks_total"].GetMetric() {
		stats.SelfChecks[label(metric, "result")] += metric.GetCounter().GetValue()
	}
	for _, metric := range families["certpilot_challenge_shard_writes_total"].GetMetric() {
		stats.ShardWrites[label(metric, "carried")] += metric.GetCounter().GetValue()
	}
	for _, metric := range families["certpilot_acme_requests_total"].GetMetric() {
		stats.ACMERequests[label(metric, "endpoint")] += metric.GetCounter().GetValue()
	}
	for _, metric := range families["certpilot_certificate_requeues_total"].GetMetric() {
		stats.Requeues[label(metric, "reason")] += metric.GetCounter().GetValue()
	}
	for _, metric := range families["certpilot_challenge_shard_puts_total"].GetMetric() {
		stats.ShardPuts += metric.GetCounter().GetValue()
	}
	for _, metric := range families["workqueue_queue_duration_seconds"].GetMetric() {
		if ours(metric) {
			stats.QueueSeconds += metric.GetHistogram().GetSampleSum()
			stats.Queued += float64(metric.GetHistogram().GetSampleCount())
		}
	}
	return stats, nil
}
