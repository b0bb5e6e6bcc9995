package edge

import "testing"

func TestGCSettings(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		cgroup    int64
		wantGOGC  int
		wantLimit int64
	}{
		{name: "defaults in a container", cgroup: 128 << 20, wantGOGC: gcPercent, wantLimit: (128 << 20) / 100 * memoryLimitPercent},
		{name: "no container limit", wantGOGC: gcPercent},
		{name: "GOGC set", env: map[string]string{"GOGC": "100"}, cgroup: 1 << 30, wantLimit: (1 << 30) / 100 * memoryLimitPercent},
		{name: "GOMEMLIMIT set", env: map[string]string{"GOMEMLIMIT": "100MiB"}, cgroup: 1 << 30, wantGOGC: gcPercent},
		{name: "both set", env: map[string]string{"GOGC": "off", "GOMEMLIMIT": "1GiB"}, cgroup: 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gogc, limit := gcSettings(func(key string) string { return tc.env[key] }, func() int64 { return tc.cgroup })
			if gogc != tc.wantGOGC || limit != tc.wantLimit {
				t.Errorf("gcSettings() = %d, %d; want %d, %d", gogc, limit, tc.wantGOGC, tc.wantLimit)
			}
		})
	}
}

func TestParseMemoryLimit(t *testing.T) {
	for content, want := range map[string]int64{
		"134217728\n":           134217728,
		"max\n":                 0,
		"9223372036854771712\n": 0, // cgroup v1 without a limit
		"":                      0,
		"-1":                    0,
	} {
		if got := parseMemoryLimit(content); got != want {
			t.Errorf("parseMemoryLimit(%q) = %d, want %d", content, got, want)
		}
	}
}
