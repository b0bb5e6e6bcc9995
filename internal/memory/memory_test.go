package memory

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestCgroupLimit(t *testing.T) {
	tests := map[string]struct {
		files map[string]string
		want  int64
	}{
		"cgroup v2 limit":    {files: map[string]string{"memory.max": "268435456\n"}, want: 268435456},
		"cgroup v2 no limit": {files: map[string]string{"memory.max": "max\n"}},
		"cgroup v1 limit":    {files: map[string]string{"memory/memory.limit_in_bytes": "134217728\n"}, want: 134217728},
		"cgroup v1 no limit": {files: map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}},
		"no cgroup":          {},
		"garbage":            {files: map[string]string{"memory.max": "lots"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			for file, content := range tc.files {
				path := filepath.Join(root, file)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got, _ := cgroupLimit(root); got != tc.want {
				t.Errorf("cgroupLimit = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("1000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")

	s := Configure(40, 0.9, root)
	if s.GCPercent != 40 || debug.SetGCPercent(40) != 40 {
		t.Errorf("GC percent %d, want 40", s.GCPercent)
	}
	if s.Limit != 900000000 || debug.SetMemoryLimit(-1) != 900000000 {
		t.Errorf("memory limit %d (%s), want 900000000", s.Limit, s.LimitSource)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	if s := Configure(40, 0, root); s.Limit != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Errorf("ratio 0 set a memory limit: %+v", s)
	}

	// The environment wins: the runtime has read GOGC and GOMEMLIMIT at start (here, it has
	// not: the test sets what the runtime would have set).
	t.Setenv("GOGC", "70")
	t.Setenv("GOMEMLIMIT", "64MiB")
	debug.SetGCPercent(70)
	debug.SetMemoryLimit(64 << 20)
	s = Configure(40, 0.9, root)
	if s.GCPercent != 70 || s.GCPercentSource != "GOGC" || debug.SetGCPercent(70) != 70 {
		t.Errorf("GOGC=70 lost: %+v", s)
	}
	if s.Limit != 64<<20 || s.LimitSource != "GOMEMLIMIT" || debug.SetMemoryLimit(-1) != 64<<20 {
		t.Errorf("GOMEMLIMIT lost: %+v", s)
	}
}
