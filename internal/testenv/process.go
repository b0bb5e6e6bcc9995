package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// GoBuild builds a main package of this module (for example "." or "./cmd/edge") into output,
// so end-to-end tests run the project's own binaries as users do.
func GoBuild(ctx context.Context, pkg, output string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", output, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig for cfg (envtest's admin credentials) to path.
func WriteKubeconfig(cfg *rest.Config, path string) error {
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["envtest"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
	}
	kubeconfig.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
	}
	kubeconfig.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest", Namespace: "default"}
	kubeconfig.CurrentContext = "envtest"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*kubeconfig, path)
}

// Process is a started binary whose output is kept (and optionally copied to a writer).
type Process struct {
	Name   string
	cmd    *exec.Cmd
	output *SyncBuffer
	done   chan struct{}
	err    error
}

// StartProcess starts binary with args; its output goes to an internal buffer (Output) and,
// when copyTo is not nil, to copyTo with each line prefixed by name.
func StartProcess(name, binary string, args []string, copyTo io.Writer) (*Process, error) {
	p := &Process{Name: name, output: &SyncBuffer{}, done: make(chan struct{})}
	var out io.Writer = p.output
	if copyTo != nil {
		out = io.MultiWriter(p.output, copyTo)
	}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout = &prefixWriter{prefix: name + ": ", w: out}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process's id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Output returns what the process has written so far.
func (p *Process) Output() string { return p.output.String() }

// Exited reports whether the process has ended, and its error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Kill kills the process at once (SIGKILL), as a crashed node or an OOM kill would, and waits
// for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM, waits up to timeout for a graceful exit, then kills the process.
func (p *Process) Stop(timeout time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// built holds the manager and edge that Binaries built for this test binary.
var built struct {
	once sync.Once
	dir  string
	err  error
}

// Binaries builds the manager and the edge once per test binary and returns their paths;
// RunWithKube removes them when the tests have run.
func Binaries(tb testing.TB) (manager, edge string) {
	tb.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "certpilot-binaries-"); built.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		for pkg, name := range map[string]string{".": "manager", "./cmd/edge": "edge"} {
			if built.err = GoBuild(ctx, pkg, filepath.Join(built.dir, name)); built.err != nil {
				return
			}
		}
	})
	if built.err != nil {
		tb.Fatalf("building the binaries: %v", built.err)
	}
	return filepath.Join(built.dir, "manager"), filepath.Join(built.dir, "edge")
}

// removeBinaries deletes what Binaries built.
func removeBinaries() {
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}

// SyncBuffer is a bytes.Buffer that concurrent writers (processes' output goroutines, loggers)
// may write to at once.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(data []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(data)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// prefixWriter prefixes each line with the process name, so interleaved output stays readable.
// Each process gets its own, as both its Stdout and Stderr: exec.Cmd then calls Write from one
// goroutine at a time, so midLine needs no lock.
type prefixWriter struct {
	prefix  string
	w       io.Writer
	midLine bool
}

func (pw *prefixWriter) Write(data []byte) (int, error) {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if !pw.midLine {
			out.WriteString(pw.prefix)
		}
		out.Write(line)
		pw.midLine = line[len(line)-1] != '\n'
	}
	if _, err := pw.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(data), nil
}
