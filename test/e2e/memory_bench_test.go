package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certpilot/certpilot/internal/testenv"
)

// BenchmarkManagerMemory measures the built manager's resident memory with many Secrets that are
// not certpilot's in the cluster: it must not grow with them (the cache holds only certpilot's
// Secrets). Run with `make bench-go` (or go test -run '^$' -bench ManagerMemory ./test/e2e/).
func BenchmarkManagerMemory(b *testing.B) {
	testenv.SkipIfShort(b)
	for _, unrelated := range []int{0, 2000} {
		b.Run(fmt.Sprintf("unrelated-secrets=%d", unrelated), func(b *testing.B) {
			ctx := context.Background()
			benchRuns++
			namespace := fmt.Sprintf("bench-memory-%d-%d", unrelated, benchRuns)
			s := startBenchStack(b, namespace)
			payload := bytes.Repeat([]byte("x"), 8<<10) // 8 KiB each: 16 MiB for 2000
			for i := range unrelated {
				secret := &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("unrelated-%d", i), Namespace: namespace},
					Data:       map[string][]byte{"data": payload},
				}
				if err := kube.Client.Create(ctx, secret); err != nil {
					b.Fatal(err)
				}
			}
			cert := s.TLSALPN01Certificate("measured", "measured.bench.test")
			if err := kube.Client.Create(ctx, cert); err != nil {
				b.Fatal(err)
			}
			// Restart the manager so its caches start from the full cluster, then let it settle.
			s.StopManager()
			if err := s.StartManager(); err != nil {
				b.Fatal(err)
			}
			time.Sleep(10 * time.Second) // settling time for a measurement, not a synchronisation
			rss, err := residentMemory(s.Manager.PID())
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				// One measurement per run: the metric below is the result.
			}
			b.ReportMetric(float64(rss)/(1<<20), "MiB-rss") // after b.Loop, which resets metrics
		})
	}
}

// benchRuns numbers the runs, so that -count runs get namespaces of their own.
var benchRuns int

// startBenchStack is startStack for a benchmark.
func startBenchStack(b *testing.B, namespace string) *testenv.Stack {
	b.Helper()
	managerBinary, edgeBinary := testenv.Binaries(b)
	pebble := testenv.StartPebble(b, testenv.PebbleOptions{})
	s, err := testenv.StartStack(context.Background(), kube, pebble, testenv.StackOptions{
		Namespace: namespace, ManagerBinary: managerBinary, EdgeBinary: edgeBinary, Dir: b.TempDir(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Stop)
	return s
}

// residentMemory reads VmRSS of a process, in bytes.
func residentMemory(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "VmRSS:" {
			kib, err := strconv.ParseInt(fields[1], 10, 64)
			return kib << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
