package edge

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
)

// The edge's garbage collector settings. Its live heap is small (certificates, routes, the
// watch caches) and every handshake and passthrough connection allocates a few KiB that die
// with it, so with Go's default (GOGC=100) the collector ran every few hundred connections and
// showed in CPU profiles (docs/bench-edge.md). gcPercent lets the heap grow to five times the
// live heap between collections; the memory limit, 90 % of the container's, makes the
// collector run earlier whenever that would come near the container's limit, so a larger
// GOGC does not turn into an OOM kill.
const (
	gcPercent          = 400
	memoryLimitPercent = 90
	cgroupV2MemoryMax  = "/sys/fs/cgroup/memory.max"
	cgroupV1MemoryMax  = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
)

// TuneGC sets the garbage collector's target percentage and memory limit (above), each only
// when its environment variable (GOGC, GOMEMLIMIT) does not set it already.
func TuneGC(log logr.Logger) {
	gogc, limit := gcSettings(os.Getenv, readCgroupMemoryLimit)
	if gogc > 0 {
		debug.SetGCPercent(gogc)
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	log.V(1).Info("Garbage collector", "gogc", gogc, "memoryLimit", limit)
}

// gcSettings decides the settings: 0 leaves one as the runtime has it.
func gcSettings(getenv func(string) string, cgroupLimit func() int64) (gogc int, memoryLimit int64) {
	if getenv("GOGC") == "" {
		gogc = gcPercent
	}
	if getenv("GOMEMLIMIT") == "" {
		if limit := cgroupLimit(); limit > 0 {
			memoryLimit = limit / 100 * memoryLimitPercent
		}
	}
	return gogc, memoryLimit
}

// readCgroupMemoryLimit returns the container's memory limit in bytes (cgroup v2, else v1),
// or 0 when there is none or it cannot be read.
func readCgroupMemoryLimit() int64 {
	for _, path := range []string{cgroupV2MemoryMax, cgroupV1MemoryMax} {
		if data, err := os.ReadFile(path); err == nil {
			return parseMemoryLimit(string(data))
		}
	}
	return 0
}

// parseMemoryLimit parses a cgroup memory limit file: a number of bytes, or "max" (cgroup v2)
// or a number near the largest int64 (cgroup v1's "no limit") for none, which are 0.
func parseMemoryLimit(content string) int64 {
	limit, err := strconv.ParseInt(strings.TrimSpace(content), 10, 64)
	if err != nil || limit <= 0 || limit >= 1<<62 {
		return 0
	}
	return limit
}
