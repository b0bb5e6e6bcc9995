package install

import (
	"bytes"
	"context"
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/testenv"
)

// TestBinariesAreStaticAndStart builds the image's binaries as the Dockerfile does (CGO_ENABLED=0;
// the image is distroless/static, which has no libc and no dynamic loader), checks that they are
// static ELF executables and that each starts and prints its usage.
func TestBinariesAreStaticAndStart(t *testing.T) {
	testenv.SkipIfShort(t)
	dir := t.TempDir()
	for _, binary := range []struct {
		name, pkg string
		// usage holds what --help prints, and on which stream.
		usage       []string
		usageStdout bool
	}{
		// The manager and the edge use Go's flag package: with ExitOnError, -h and --help print
		// the usage to stderr and exit 0 (flag.ErrHelp), before any flag is acted on.
		{name: "manager", pkg: ".", usage: []string{"Usage of", "-leader-elect", "-metrics-bind-address", "-health-probe-bind-address"}},
		{name: "edge", pkg: "./cmd/edge", usage: []string{"Usage of", "-challenge-secret", "-https-bind-address", "-http-bind-address"}},
		// The plugin uses cobra: --help prints to stdout and exits 0.
		{name: "kubectl-certpilot", pkg: "./cmd/kubectl-certpilot", usage: []string{"kubectl certpilot", "ls", "status", "renew", "dns"}, usageStdout: true},
	} {
		t.Run(binary.name, func(t *testing.T) {
			path := filepath.Join(dir, binary.name)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			if err := testenv.GoBuild(ctx, binary.pkg, path); err != nil {
				t.Fatal(err)
			}
			assertStatic(t, path)

			ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, path, "--help")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			// No kubeconfig, no cluster: --help must not need one.
			cmd.Env = []string{"HOME=" + t.TempDir(), "KUBECONFIG=" + filepath.Join(t.TempDir(), "none")}
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s --help: %v (want exit 0)\nstdout:\n%s\nstderr:\n%s", binary.name, err, stdout.String(), stderr.String())
			}
			usage, other := stderr.String(), stdout.String()
			if binary.usageStdout {
				usage, other = other, usage
			}
			for _, want := range binary.usage {
				if !strings.Contains(usage, want) {
					t.Errorf("%s --help usage misses %q:\n%s", binary.name, want, usage)
				}
			}
			if other != "" {
				t.Errorf("%s --help also wrote to the other stream:\n%s", binary.name, other)
			}
		})
	}
}

// assertStatic fails unless path is an ELF executable with no program interpreter (dynamic
// loader) and no shared library dependencies.
func assertStatic(t *testing.T, path string) {
	t.Helper()
	file, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s is not ELF: %v", path, err)
	}
	defer file.Close()
	for _, program := range file.Progs {
		if program.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter (PT_INTERP): it is dynamically linked", filepath.Base(path))
		}
	}
	libraries, err := file.ImportedLibraries()
	if err != nil {
		t.Fatalf("%s: reading DT_NEEDED: %v", filepath.Base(path), err)
	}
	if len(libraries) > 0 {
		t.Errorf("%s needs shared libraries (DT_NEEDED): %v", filepath.Base(path), libraries)
	}
	if file.Type != elf.ET_EXEC {
		t.Errorf("%s is ELF type %v, want a static executable (ET_EXEC)", filepath.Base(path), file.Type)
	}
}
