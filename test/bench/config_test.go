package bench

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/solver"
)

// Solvers and key types the benchmark can run.
const (
	solverTLSALPN01 = "tls-alpn-01"
	solverDNS01     = "dns-01"

	keyECDSA   = "ecdsa"
	keyRSA2048 = "rsa2048"
)

// config is one benchmark run's settings, read from BENCH_* environment variables (the Makefile
// passes `make bench BENCH_N=1000` through).
type config struct {
	// N Certificates, applied at once; the floor issues as many.
	N int
	// Solver is tls-alpn-01 (through the edge) or dns-01 (RFC 2136 on BIND).
	Solver string
	// Key is the certificates' key type: ecdsa (P-256) or rsa2048.
	Key string
	// Names per certificate.
	Names int
	// AlwaysValid runs Pebble with PEBBLE_VA_ALWAYS_VALID=1: challenges are still presented,
	// but the CA does not check them, so what remains is the client's own cost.
	AlwaysValid bool
	// Concurrency is how many certificates the floor client issues at a time.
	Concurrency int
	// ApplyWorkers create the Certificates in parallel.
	ApplyWorkers int
	// Rest is how long the machine idles before each measured phase: the floor, the Kubernetes
	// floor, and certpilot's burst (after the stack's start; "RSS at rest" is read then). On
	// this VM a phase that starts right after another kept both cores busy runs slower: with
	// 10 s, certpilot's burst, which runs last, took 20.2-21.6 s where it took 16.6-17.0 s after a
	// minute's rest, every process spending a fifth more CPU on the same work.
	Rest time.Duration
	// Settle is the pause between all Ready and the idle window (trailing clean-ups).
	Settle time.Duration
	// Idle is the window in which writes are counted with nothing to do.
	Idle time.Duration
	// Timeout bounds the floor's and the manager's issuance each.
	Timeout time.Duration
	// Stall ends the manager's run when no Certificate became Ready for so long (0: never).
	Stall time.Duration
	// Floor runs the bare ACME client first; off, the ratio is not reported.
	Floor bool
	// KubeFloor runs the Kubernetes floor too (with Floor): the bare client also creating each
	// Certificate, its Secret and its Ready status through the benchmark's apiserver.
	KubeFloor bool
	// ManagerArgs are added to the manager's flags; EdgeArgs to the edge's.
	ManagerArgs []string
	EdgeArgs    []string
	// Record appends the results to Report.
	Record bool
	Report string
	// Note is free text recorded with the results (what changed, why it was run).
	Note string
	// ManagerLog, when set, is a file the manager's log is written to after the run (to see
	// when each certificate's steps happened).
	ManagerLog string
}

// configFromEnv reads the BENCH_* variables; getenv is os.Getenv outside tests.
func configFromEnv(getenv func(string) string) (config, error) {
	c := config{
		N: 200, Solver: solverTLSALPN01, Key: keyECDSA, Names: 1, Concurrency: 100, ApplyWorkers: 50,
		Rest: time.Minute, Settle: solver.RemovalDelay + 10*time.Second, Idle: time.Minute, Stall: 5 * time.Minute,
		Floor: true, KubeFloor: true, Record: true,
	}
	var errs []string
	intVar := func(name string, target *int, min int) {
		if value := getenv(name); value != "" {
			n, err := strconv.Atoi(value)
			if err != nil || n < min {
				errs = append(errs, fmt.Sprintf("%s=%q: want an integer >= %d", name, value, min))
				return
			}
			*target = n
		}
	}
	durationVar := func(name string, target *time.Duration) {
		if value := getenv(name); value != "" {
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				errs = append(errs, fmt.Sprintf("%s=%q: want a duration such as 30s or 5m", name, value))
				return
			}
			*target = d
		}
	}
	boolVar := func(name string, target *bool) {
		if value := getenv(name); value != "" {
			b, err := strconv.ParseBool(value)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: want 1 or 0", name, value))
				return
			}
			*target = b
		}
	}
	intVar("BENCH_N", &c.N, 1)
	intVar("BENCH_NAMES", &c.Names, 1)
	intVar("BENCH_CONCURRENCY", &c.Concurrency, 1)
	intVar("BENCH_APPLY_WORKERS", &c.ApplyWorkers, 1)
	durationVar("BENCH_REST", &c.Rest)
	durationVar("BENCH_SETTLE", &c.Settle)
	durationVar("BENCH_IDLE", &c.Idle)
	durationVar("BENCH_TIMEOUT", &c.Timeout)
	durationVar("BENCH_STALL", &c.Stall)
	boolVar("BENCH_ALWAYS_VALID", &c.AlwaysValid)
	boolVar("BENCH_FLOOR", &c.Floor)
	boolVar("BENCH_KUBE_FLOOR", &c.KubeFloor)
	boolVar("BENCH_RECORD", &c.Record)
	if value := getenv("BENCH_SOLVER"); value != "" {
		c.Solver = value
	}
	if c.Solver != solverTLSALPN01 && c.Solver != solverDNS01 {
		errs = append(errs, fmt.Sprintf("BENCH_SOLVER=%q: want %s or %s", c.Solver, solverTLSALPN01, solverDNS01))
	}
	if value := getenv("BENCH_KEY"); value != "" {
		c.Key = value
	}
	if c.Key != keyECDSA && c.Key != keyRSA2048 {
		errs = append(errs, fmt.Sprintf("BENCH_KEY=%q: want %s or %s", c.Key, keyECDSA, keyRSA2048))
	}
	if c.Names > 100 {
		errs = append(errs, fmt.Sprintf("BENCH_NAMES=%d: a Certificate holds at most 100 names", c.Names))
	}
	c.ManagerArgs = strings.Fields(getenv("BENCH_MANAGER_ARGS"))
	c.EdgeArgs = strings.Fields(getenv("BENCH_EDGE_ARGS"))
	c.Report = getenv("BENCH_REPORT")
	c.Note = getenv("BENCH_NOTE")
	c.ManagerLog = getenv("BENCH_MANAGER_LOG")
	if c.Timeout == 0 {
		// 333 s was measured for 1,000 certificates: this leaves three times that and more.
		c.Timeout = 5*time.Minute + time.Duration(c.N)*time.Second
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("benchmark settings: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// command is the make invocation that repeats the run.
func (c config) command() string {
	parts := []string{"make bench",
		fmt.Sprintf("BENCH_N=%d", c.N),
		"BENCH_SOLVER=" + c.Solver,
		"BENCH_KEY=" + c.Key,
		fmt.Sprintf("BENCH_NAMES=%d", c.Names),
		fmt.Sprintf("BENCH_ALWAYS_VALID=%d", boolInt(c.AlwaysValid)),
		fmt.Sprintf("BENCH_CONCURRENCY=%d", c.Concurrency),
		"BENCH_IDLE=" + c.Idle.String(),
	}
	if !c.Floor {
		parts = append(parts, "BENCH_FLOOR=0")
	} else if !c.KubeFloor {
		parts = append(parts, "BENCH_KUBE_FLOOR=0")
	}
	if len(c.ManagerArgs) > 0 {
		parts = append(parts, fmt.Sprintf("BENCH_MANAGER_ARGS=%q", strings.Join(c.ManagerArgs, " ")))
	}
	return strings.Join(parts, " ")
}

// title names the run in the report.
func (c config) title() string {
	key := "ECDSA P-256"
	if c.Key == keyRSA2048 {
		key = "RSA-2048"
	}
	title := fmt.Sprintf("N=%d %s, %s, %d name(s) each", c.N, c.Solver, key, c.Names)
	if c.Solver == solverDNS01 {
		title = fmt.Sprintf("N=%d dns-01 (RFC 2136 on BIND), %s, %d name(s) each", c.N, key, c.Names)
	}
	if c.AlwaysValid {
		title += ", PEBBLE_VA_ALWAYS_VALID"
	}
	return title
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestConfigFromEnv(t *testing.T) {
	tests := map[string]struct {
		env     map[string]string
		want    func(config) bool
		wantErr string
	}{
		"defaults": {
			want: func(c config) bool {
				return c.N == 200 && c.Solver == solverTLSALPN01 && c.Key == keyECDSA && c.Names == 1 &&
					c.Idle == time.Minute && c.Floor && c.KubeFloor && c.Timeout == 5*time.Minute+200*time.Second
			},
		},
		"big run": {
			env: map[string]string{"BENCH_N": "10000", "BENCH_ALWAYS_VALID": "1", "BENCH_IDLE": "5m",
				"BENCH_MANAGER_ARGS": "--workers 16  --zap-log-level=error"},
			want: func(c config) bool {
				return c.N == 10000 && c.AlwaysValid && c.Idle == 5*time.Minute &&
					strings.Join(c.ManagerArgs, "|") == "--workers|16|--zap-log-level=error"
			},
		},
		"dns-01 rsa": {
			env:  map[string]string{"BENCH_SOLVER": "dns-01", "BENCH_KEY": "rsa2048", "BENCH_N": "100"},
			want: func(c config) bool { return c.Solver == solverDNS01 && c.Key == keyRSA2048 },
		},
		"bad values": {
			env:     map[string]string{"BENCH_N": "0", "BENCH_SOLVER": "http-01", "BENCH_IDLE": "soon"},
			wantErr: "BENCH_N",
		},
		"too many names": {env: map[string]string{"BENCH_NAMES": "101"}, wantErr: "at most 100"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := configFromEnv(func(key string) string { return tc.env[key] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
}
