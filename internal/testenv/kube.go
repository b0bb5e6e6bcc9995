package testenv

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// Kube is a running kube-apiserver and etcd with certpilot's CRDs installed. Nothing else of a
// cluster runs: no controller-manager, no scheduler, no kubelet, so Deployments never roll out.
type Kube struct {
	Env    *envtest.Environment
	Config *rest.Config
	Scheme *runtime.Scheme
	// Client talks to the apiserver directly (no cache).
	Client client.Client
}

// NewScheme returns a scheme with the Kubernetes built-in types, CRDs, certpilot's types and the
// Gateway API's v1 types (its CRDs are installed by InstallGatewayAPI, not by StartKube).
func NewScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, certpilotv1alpha1.AddToScheme, gatewayv1.Install,
	} {
		if err := add(scheme); err != nil {
			panic(err) // static registration: fails only on a programming error
		}
	}
	return scheme
}

// KubeOptions configure StartKubeWith. The zero value is what StartKube starts.
type KubeOptions struct {
	// AuditLogPath, when set, makes the apiserver write an audit log there: one JSON line per
	// request at level Metadata (verb, user, user agent, resource; no bodies). ReadAuditLog
	// reads it.
	AuditLogPath string
}

// StartKube starts etcd and kube-apiserver from bin/k8s and installs the CRDs from
// config/crd/bases. Stop it with Stop.
func StartKube() (*Kube, error) { return StartKubeWith(KubeOptions{}) }

// StartKubeWith is StartKube with options.
func StartKubeWith(opts KubeOptions) (*Kube, error) {
	for _, name := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := binaryPath(filepath.Join("k8s", name)); err != nil {
			return nil, err
		}
	}
	binDir, err := BinDir()
	if err != nil {
		return nil, err
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	scheme := NewScheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory: filepath.Join(binDir, "k8s"),
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	if opts.AuditLogPath != "" {
		if err := configureAudit(env, opts.AuditLogPath); err != nil {
			return nil, err
		}
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest (kube-apiserver, etcd from %s): %w", env.BinaryAssetsDirectory, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Kube{Env: env, Config: cfg, Scheme: scheme, Client: c}, nil
}

// Stop stops the apiserver and etcd.
func (k *Kube) Stop() error {
	if k == nil {
		return nil
	}
	return k.Env.Stop()
}

// KubectlPath returns the kubectl built with the apiserver.
func KubectlPath() (string, error) { return binaryPath(filepath.Join("k8s", "kubectl")) }

// RunWithKube is a TestMain body that starts one Kube for the whole package, stores it in *kube,
// runs the tests and stops it. Under -short it runs the tests without starting anything (tests
// that need the apiserver call SkipIfShort). A missing binary fails the package with the command
// that builds it.
//
//	var kube *testenv.Kube
//	func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }
func RunWithKube(m *testing.M, kube **Kube) int {
	return RunWithKubeOptions(m, kube, KubeOptions{})
}

// fuzzWorker reports whether this test process is one of `go test -fuzz`'s workers: they run
// only the fuzz target, which needs no apiserver, and each would otherwise start its own.
func fuzzWorker() bool {
	worker := flag.Lookup("test.fuzzworker")
	return worker != nil && worker.Value.String() == "true"
}

// RunWithKubeOptions is RunWithKube with the apiserver configured by opts (an audit log).
func RunWithKubeOptions(m *testing.M, kube **Kube, opts KubeOptions) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	if testing.Short() || fuzzWorker() {
		return m.Run()
	}
	started, err := StartKubeWith(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	*kube = started
	code := m.Run()
	removeBinaries()
	if err := started.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
	}
	return code
}
