// Package memory sets the Go garbage collector's targets for the manager: how much garbage it
// lets accumulate between collections (GOGC) and the soft limit it keeps the process under
// (GOMEMLIMIT), from the container's memory limit when there is one.
package memory

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// Settings is what Configure set, for the log.
type Settings struct {
	// GCPercent is the GOGC in force.
	GCPercent int
	// GCPercentSource is "GOGC" when the environment set it, else "flag".
	GCPercentSource string
	// Limit is the soft memory limit in bytes; 0 when there is none.
	Limit int64
	// LimitSource is "GOMEMLIMIT", the cgroup file the limit was derived from, or "".
	LimitSource string
}

// Configure sets GOGC to gcPercent unless the GOGC environment variable is set, and a soft
// memory limit of limitRatio times the cgroup's memory limit unless GOMEMLIMIT is set (the
// environment always wins, as the Go runtime documents). cgroupRoot is /sys/fs/cgroup outside
// tests. With no cgroup limit and no GOMEMLIMIT, there is no memory limit.
func Configure(gcPercent int, limitRatio float64, cgroupRoot string) Settings {
	var s Settings
	if value := os.Getenv("GOGC"); value != "" {
		s.GCPercent, s.GCPercentSource = debug.SetGCPercent(-1), "GOGC"
		debug.SetGCPercent(s.GCPercent)
	} else {
		debug.SetGCPercent(gcPercent)
		s.GCPercent, s.GCPercentSource = gcPercent, "flag"
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		s.Limit, s.LimitSource = debug.SetMemoryLimit(-1), "GOMEMLIMIT"
		return s
	}
	limit, source := cgroupLimit(cgroupRoot)
	if limit <= 0 || limitRatio <= 0 {
		return s
	}
	s.Limit, s.LimitSource = int64(float64(limit)*min(limitRatio, 1)), source
	debug.SetMemoryLimit(s.Limit)
	return s
}

// cgroupLimit reads the memory limit of the process's cgroup: cgroup v2's memory.max, else
// cgroup v1's memory.limit_in_bytes (in a container, its cgroup is mounted at the root).
// 0 means no limit.
func cgroupLimit(root string) (int64, string) {
	for _, file := range []string{filepath.Join(root, "memory.max"), filepath.Join(root, "memory", "memory.limit_in_bytes")} {
		content, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		value := strings.TrimSpace(string(content))
		if value == "max" {
			return 0, ""
		}
		limit, err := strconv.ParseInt(value, 10, 64)
		// cgroup v1 writes "no limit" as a page-aligned number near the int64 maximum.
		if err != nil || limit <= 0 || limit > math.MaxInt64/2 {
			return 0, ""
		}
		return limit, file
	}
	return 0, ""
}
