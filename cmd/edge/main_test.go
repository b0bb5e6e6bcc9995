package main_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/testenv"
)

// kube is one apiserver for the package (nil under -short).
var kube *testenv.Kube

// buildDir holds the binary that buildEdge builds once for the package's tests.
var buildDir string

func TestMain(m *testing.M) {
	code := testenv.RunWithKube(m, &kube)
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

var (
	buildOnce   sync.Once
	buildBinary string
	buildErr    error
)

// buildEdge builds this command with `go build`, once per test binary, and returns its path.
func buildEdge(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go command is needed to build cmd/edge: %w", err)
			return
		}
		if buildDir, err = os.MkdirTemp("", "certpilot-edge-"); err != nil {
			buildErr = err
			return
		}
		binary := filepath.Join(buildDir, "edge")
		// go test runs in the package directory, so "." is cmd/edge.
		if output, err := exec.Command(goTool, "build", "-o", binary, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, output)
			return
		}
		buildBinary = binary
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBinary
}

// writeKubeconfig writes a kubeconfig for config into the test's directory.
func writeKubeconfig(t *testing.T, config *rest.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := testenv.WriteKubeconfig(config, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// process is a started edge binary.
type process struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error // valid once exited is closed
}

// start runs binary with args; its output goes to a file that the test prints when it fails.
// The process is killed at cleanup if the test has not stopped it.
func start(t *testing.T, binary string, args ...string) *process {
	t.Helper()
	return startWithEnv(t, binary, nil, args...)
}

// startWithEnv is start with extra environment variables ("NAME=value").
func startWithEnv(t *testing.T, binary string, env []string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "edge.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(append(os.Environ(), "KUBECONFIG=", "POD_NAMESPACE="), env...)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatal(err)
	}
	p := &process{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("edge output:\n%s", p.output(t))
		}
	})
	return p
}

func (p *process) output(t *testing.T) string {
	t.Helper()
	output, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(output)
}

// wait waits for the process to exit and returns its exit code.
func (p *process) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("edge did not exit within %v", timeout)
	}
	var exitError *exec.ExitError
	if errors.As(p.err, &exitError) {
		return exitError.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("waiting for the edge: %v", p.err)
	}
	return 0
}

func TestEdgeBinary(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	binary := buildEdge(t)

	// A generated name: envtest never deletes namespaces (no namespace controller), and
	// -count=N reuses the apiserver.
	createdNamespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "edge-binary-"}}
	if err := kube.Client.Create(ctx, createdNamespace); err != nil {
		t.Fatal(err)
	}
	namespace := createdNamespace.Name
	account := edgetest.NewAccount(t)
	challengePEM := account.ChallengeCertificatePEM(t, "token-1", "edge.example.com")
	keyAuthorization := account.KeyAuthorization(t, "token-h")
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: v1alpha1.ChallengeSecretName("edge")},
		Data: map[string][]byte{
			v1alpha1.TLSALPN01Key("edge.example.com"): challengePEM,
			v1alpha1.HTTP01Key("token-h"):             []byte(keyAuthorization),
		},
	}
	if err := kube.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}

	// The static default certificate for ordinary handshakes.
	ordinary := edgetest.SelfSignedCertificate(t, "www.example.com")
	ordinaryPEM := edgetest.CertificatePEM(t, ordinary)
	certificateFile := filepath.Join(t.TempDir(), "tls.pem")
	if err := os.WriteFile(certificateFile, ordinaryPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	httpsAddress, httpAddress, healthAddress := testenv.FreeAddress(t), testenv.FreeAddress(t), testenv.FreeAddress(t)
	edgeProcess := start(t, binary,
		"--kubeconfig", writeKubeconfig(t, kube.Config),
		"--namespace", namespace,
		"--challenge-secret", secret.Name,
		"--https-bind-address", httpsAddress,
		"--http-bind-address", httpAddress,
		"--health-bind-address", healthAddress,
		"--certificate", certificateFile, "--key", certificateFile,
		"--zap-log-level", "debug",
	)

	client := &http.Client{Timeout: 5 * time.Second}
	edgetest.Eventually(t, time.Minute, func() error {
		select {
		case <-edgeProcess.exited:
			t.Fatalf("edge exited early: %v", edgeProcess.err)
		default:
		}
		response, err := client.Get("http://" + healthAddress + "/readyz")
		if err != nil {
			return err
		}
		defer response.Body.Close()
		body, _ := io.ReadAll(response.Body)
		if response.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", response.StatusCode, body)
		}
		return nil
	})

	// Ready means the Secret has been loaded: the validator's handshake succeeds at once.
	if err := edgetest.ValidateChallenge(ctx, httpsAddress, "edge.example.com", account.KeyAuthorization(t, "token-1")); err != nil {
		t.Fatalf("tls-alpn-01 validation: %v", err)
	}

	// An ordinary handshake for the same name gets the static certificate.
	state, err := edgetest.Handshake(ctx, httpsAddress, "edge.example.com", nil, 0)
	if err != nil {
		t.Fatalf("ordinary handshake: %v", err)
	}
	if !state.PeerCertificates[0].Equal(ordinary.Leaf) {
		t.Errorf("ordinary handshake got %v, want the --certificate", state.PeerCertificates[0].DNSNames)
	}

	// http-01 on the HTTP port.
	response, err := client.Get("http://" + httpAddress + edge.HTTP01PathPrefix + "token-h")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(response.Body)
	response.Body.Close()
	if response.StatusCode != http.StatusOK || string(body) != keyAuthorization {
		t.Errorf("http-01: %d %q", response.StatusCode, body)
	}

	// SIGTERM: a clean exit, and then the port is closed.
	if err := edgeProcess.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := edgeProcess.wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if _, err := edgetest.Handshake(ctx, httpsAddress, "edge.example.com", []string{acme.ALPNProto}, 0); err == nil {
		t.Error("handshake succeeded after the edge exited")
	}

	// No key material, key authorization or token in the logs, even at debug level.
	output := edgeProcess.output(t)
	for _, secretText := range []string{"PRIVATE KEY", "BEGIN CERTIFICATE", keyAuthorization, "token-h", "token-1"} {
		if strings.Contains(output, secretText) {
			t.Errorf("the edge logged %q", secretText)
		}
	}
	if !strings.Contains(output, "Loaded the challenge Secret") {
		t.Errorf("the edge did not log loading the Secret:\n%s", output)
	}
}

func TestEdgeBinaryRejectsBadFlags(t *testing.T) {
	testenv.SkipIfShort(t) // builds the binary
	binary := buildEdge(t)
	for name, args := range map[string][]string{
		"no source":        {},
		"two sources":      {"--challenge-secret", "x", "--challenge-dir", t.TempDir()},
		"key without cert": {"--challenge-dir", t.TempDir(), "--key", "k.pem"},
		"host map without certificate namespaces": {"--challenge-dir", t.TempDir(),
			"--certificate-host-namespaces", "*.a.test=a"},
		"bad host map": {"--challenge-dir", t.TempDir(), "--certificate-namespaces", "a",
			"--certificate-host-namespaces", "a.test"},
	} {
		t.Run(name, func(t *testing.T) {
			edgeProcess := start(t, binary, append(args, "--https-bind-address", "127.0.0.1:0",
				"--http-bind-address", "127.0.0.1:0", "--health-bind-address", "127.0.0.1:0")...)
			if code := edgeProcess.wait(t, 30*time.Second); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
		})
	}
}
