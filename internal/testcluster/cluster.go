package testcluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certpilot/certpilot/internal/testenv"
)

// Options configures Up.
type Options struct {
	// Dir holds the cluster's state, configuration, certificates and logs (logs/<component>.log);
	// Down removes everything in it but the logs. Required.
	Dir string
	// Images are OCI image tarballs (hack/build-image.sh) pushed to the cluster's registry
	// (Registry) before the kubelet starts, each under its name without the registry
	// (certpilot:dev is Registry/certpilot:dev). The sandbox image, which Up builds, is imported
	// into containerd instead.
	Images []string
	// Log, when set, receives one line per step.
	Log io.Writer
}

// Cluster is a running single-node cluster.
type Cluster struct {
	// Dir is Options.Dir.
	Dir string
	// Kubeconfig is the administrator's kubeconfig (system:masters), Dir/kubeconfig.
	Kubeconfig string
	// Config is the administrator's REST config.
	Config *rest.Config
	// CAPEM is the cluster CA (the apiserver's serving certificate chains to it).
	CAPEM []byte

	log   io.Writer
	procs []*process
	bin   string
	// byName finds a started component for Down's ordered stop.
	byName map[string]*process
}

// baseline is what the machine had before Up, so that Cleanup removes only what the cluster
// added and Leftovers compares against it.
type baseline struct {
	Chains []string `json:"chains"`
	Netns  []string `json:"netns"`
	// HostPaths are the hostPaths that existed.
	HostPaths []string `json:"hostPaths"`
}

// Up starts a single-node cluster and returns when its node is Ready and the default
// ServiceAccount exists. On error it tears down what it started.
func Up(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Dir == "" {
		return nil, errors.New("testcluster: Options.Dir is required")
	}
	if why := CannotRun(); why != "" {
		return nil, errors.New(why)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	dir, err := resolve(opts.Dir)
	if err != nil {
		return nil, err
	}
	if bridgeExists() || exists(runDir) {
		return nil, fmt.Errorf("a single-node cluster is already up on this machine (bridge %s or %s exists): stop it with `make cluster-down` first", Bridge, runDir)
	}
	bin, err := testenv.BinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"), log: opts.Log, bin: bin, byName: map[string]*process{}}
	if c.log == nil {
		c.log = io.Discard
	}
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "etcd"} {
		if _, err := os.Stat(filepath.Join(bin, "k8s", name)); err != nil {
			return nil, fmt.Errorf("%s is missing: run `make test-binaries` (it builds the node's binaries into bin/k8s)", filepath.Join(bin, "k8s", name))
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	if err := writeBaseline(dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if downErr := c.Down(); downErr != nil {
				err = fmt.Errorf("%w (and tearing down: %v)", err, downErr)
			}
		}
	}()
	started := time.Now()
	c.step("network: bridge %s %s/24, Services %s", Bridge, BridgeIP, ServiceCIDR)
	if err := setUpCgroups(); err != nil {
		return nil, err
	}
	if err := setUpNetwork(); err != nil {
		return nil, err
	}
	if err := c.startControlPlane(ctx); err != nil {
		return nil, err
	}
	if err := c.startNode(ctx, opts.Images); err != nil {
		return nil, err
	}
	c.step("node %s Ready in %s", NodeName, time.Since(started).Round(100*time.Millisecond))
	return c, nil
}

func (c *Cluster) step(format string, args ...any) {
	fmt.Fprintf(c.log, "[cluster] "+format+"\n", args...)
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	pkiDir := filepath.Join(c.Dir, "pki")
	p, err := newPKI(pkiDir)
	if err != nil {
		return err
	}
	c.CAPEM = p.CAPEM()
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer := ports[0], ports[1]
	apiPort, err := freePort(BridgeIP)
	if err != nil {
		return err
	}
	server := "https://" + net.JoinHostPort(BridgeIP, strconv.Itoa(apiPort))

	c.step("etcd on 127.0.0.1:%d", etcdClient)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	etcd, err := c.start("etcd", filepath.Join(c.bin, "k8s", "etcd"),
		"--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, etcd, etcdURL+"/health", nil); err != nil {
		return err
	}

	apiCert, apiKey, err := p.issue("apiserver", "kube-apiserver", nil, BridgeIP, "10.214.0.1", "127.0.0.1",
		"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
	if err != nil {
		return err
	}
	kubeletClientCert, kubeletClientKey, err := p.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"})
	if err != nil {
		return err
	}
	saKey, saPub, err := p.serviceAccountKey()
	if err != nil {
		return err
	}
	c.step("kube-apiserver on %s", server)
	apiserver, err := c.start("kube-apiserver", filepath.Join(c.bin, "k8s", "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", BridgeIP, "--advertise-address", BridgeIP, "--secure-port", strconv.Itoa(apiPort),
		"--service-cluster-ip-range", ServiceCIDR,
		"--client-ca-file", p.caFile, "--tls-cert-file", apiCert, "--tls-private-key-file", apiKey,
		"--kubelet-client-certificate", kubeletClientCert, "--kubelet-client-key", kubeletClientKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--authorization-mode", "Node,RBAC", "--allow-privileged=true", "--profiling=false")
	if err != nil {
		return err
	}

	admin, err := p.kubeconfig("admin", server, "certpilot-admin", "system:masters")
	if err != nil {
		return err
	}
	data, err := os.ReadFile(admin)
	if err != nil {
		return err
	}
	// The user's kubeconfig carries its credentials inline, so it can be copied elsewhere.
	loaded, err := clientcmd.Load(data)
	if err != nil {
		return err
	}
	if err := clientcmdapi.FlattenConfig(loaded); err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*loaded, c.Kubeconfig); err != nil {
		return err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, apiserver, server+"/readyz", c.Config); err != nil {
		return err
	}

	controllerManager, err := p.kubeconfig("controller-manager", server, "system:kube-controller-manager")
	if err != nil {
		return err
	}
	c.step("kube-controller-manager, kube-scheduler")
	if _, err := c.start("kube-controller-manager", filepath.Join(c.bin, "k8s", "kube-controller-manager"),
		"--kubeconfig", controllerManager,
		"--authentication-kubeconfig", controllerManager, "--authorization-kubeconfig", controllerManager,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(ports[2]), "--leader-elect=false",
		"--service-account-private-key-file", saKey, "--root-ca-file", p.caFile,
		"--use-service-account-credentials=true", "--cluster-name", "certpilot"); err != nil {
		return err
	}
	scheduler, err := p.kubeconfig("scheduler", server, "system:kube-scheduler")
	if err != nil {
		return err
	}
	if _, err := c.start("kube-scheduler", filepath.Join(c.bin, "k8s", "kube-scheduler"),
		"--kubeconfig", scheduler,
		"--authentication-kubeconfig", scheduler, "--authorization-kubeconfig", scheduler,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(ports[3]), "--leader-elect=false"); err != nil {
		return err
	}

	// The node's own credentials, used by startNode.
	if _, err := p.kubeconfig("kubelet", server, "system:node:"+NodeName, "system:nodes"); err != nil {
		return err
	}
	if _, err := p.kubeconfig("kube-proxy", server, "system:kube-proxy"); err != nil {
		return err
	}
	return nil
}

func (c *Cluster) startNode(ctx context.Context, images []string) error {
	pkiDir := filepath.Join(c.Dir, "pki")
	if err := writeFile(filepath.Join(c.Dir, "containerd.toml"), containerdConfig(c.Dir)); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(c.Dir, "cni", "10-certpilot.conflist"), cniConfig(c.Dir)); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(c.Dir, "certs.d", Registry, "hosts.toml"), registryHosts()); err != nil {
		return err
	}
	c.step("containerd on %s", containerdSocket)
	containerd, err := c.start("containerd", "containerd", "--config", filepath.Join(c.Dir, "containerd.toml"))
	if err != nil {
		return err
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		if err := c.exited(containerd); err != nil {
			return false, err
		}
		return exec.Command("ctr", "--address", containerdSocket, "version").Run() == nil, nil
	}); err != nil {
		return fmt.Errorf("containerd did not answer: %w\n%s", err, c.logTail("containerd", 30))
	}

	pause, err := BuildImage(ctx, "pause")
	if err != nil {
		return err
	}
	c.step("importing %s", pause)
	if out, err := exec.CommandContext(ctx, "ctr", "--address", containerdSocket, "-n", "k8s.io",
		"images", "import", pause).CombinedOutput(); err != nil {
		return fmt.Errorf("ctr images import %s: %w\n%s", pause, err, out)
	}
	if err := c.startRegistry(ctx, images); err != nil {
		return err
	}

	resolvConf := filepath.Join(c.Dir, "resolv.conf")
	if err := writeFile(resolvConf, ""); err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	kubeletPort, err := freePort(BridgeIP)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(c.Dir, "kubelet.yaml"),
		kubeletConfig(c.Dir, filepath.Join(pkiDir, "ca.crt"), resolvConf, kubeletPort, ports[0])); err != nil {
		return err
	}
	c.step("kubelet on %s:%d, kube-proxy", BridgeIP, kubeletPort)
	kubelet, err := c.start("kubelet", filepath.Join(c.bin, "k8s", "kubelet"),
		"--config", filepath.Join(c.Dir, "kubelet.yaml"),
		"--kubeconfig", filepath.Join(pkiDir, "kubelet.kubeconfig"),
		"--root-dir", filepath.Join(c.Dir, "kubelet"),
		"--cert-dir", filepath.Join(c.Dir, "kubelet", "pki"),
		"--hostname-override", NodeName, "--node-ip", BridgeIP)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(c.Dir, "kube-proxy.yaml"),
		kubeProxyConfig(filepath.Join(pkiDir, "kube-proxy.kubeconfig"), ports[1], ports[2])); err != nil {
		return err
	}
	proxy, err := c.start("kube-proxy", filepath.Join(c.bin, "k8s", "kube-proxy"),
		"--config", filepath.Join(c.Dir, "kube-proxy.yaml"))
	if err != nil {
		return err
	}

	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, p := range []*process{kubelet, proxy, containerd} {
			if err := c.exited(p); err != nil {
				return false, err
			}
		}
		node, err := client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		ready := false
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return false, nil
		}
		_, err = client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// startRegistry runs hack/image/registry on Registry and waits until it has pushed images.
func (c *Cluster) startRegistry(ctx context.Context, images []string) error {
	binary, err := runBuild(ctx, "registry")
	if err != nil {
		return err
	}
	ready := filepath.Join(c.Dir, "registry.ready")
	args := []string{"--listen", Registry, "--blobs", filepath.Join(c.Dir, "registry"), "--ready", ready}
	for _, image := range images {
		args = append(args, "--push", image)
	}
	c.step("registry on http://%s, pushing %d images", Registry, len(images))
	registry, err := c.start("registry", binary, args...)
	if err != nil {
		return err
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		if err := c.exited(registry); err != nil {
			return false, err
		}
		return exists(ready), nil
	}); err != nil {
		return fmt.Errorf("the registry did not push the images: %w\n%s", err, c.logTail("registry", 30))
	}
	return nil
}

// waitHTTP polls url until it answers 200 or p exits. With config, it uses its TLS client
// certificate and CA.
func (c *Cluster) waitHTTP(ctx context.Context, p *process, url string, config *rest.Config) error {
	client := &http.Client{Timeout: 2 * time.Second}
	if config != nil {
		transport, err := rest.TransportFor(config)
		if err != nil {
			return err
		}
		client.Transport = transport
	} else {
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{}}
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.exited(p); err != nil {
			return false, err
		}
		resp, err := client.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%s did not become ready at %s: %w\n%s", p.name, url, err, c.logTail(p.name, 30))
	}
	return nil
}

// BuildImage runs hack/build-image.sh for what ("certpilot" or "pause") and returns the
// tarball's path under bin/image.
func BuildImage(ctx context.Context, what string) (string, error) {
	out, err := runBuild(ctx, what)
	if err != nil {
		return "", err
	}
	return out + ".tar", nil
}

// runBuild runs hack/build-image.sh for what and returns bin/image/<what> of the repository,
// where the script writes (built from this tree, so not under CERTPILOT_BIN_DIR, which holds
// the pinned test binaries).
func runBuild(ctx context.Context, what string) (string, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "build-image.sh"), what)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("hack/build-image.sh %s: %w\n%s", what, err, out)
	}
	return filepath.Join(root, "bin", "image", what), nil
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePorts returns n distinct loopback ports that were free a moment ago, below the kernel's
// ephemeral range (testenv.ListenFree).
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := testenv.ListenFree()
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func writeBaseline(dir string) error {
	b := baseline{HostPaths: existingHostPaths()}
	var err error
	if b.Chains, err = chains(); err != nil {
		return err
	}
	b.Netns = netnsList()
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "baseline.json"), data, 0o644)
}

func readBaseline(dir string) (baseline, error) {
	var b baseline
	data, err := os.ReadFile(filepath.Join(dir, "baseline.json"))
	if err != nil {
		return b, err
	}
	return b, json.Unmarshal(data, &b)
}

// resolve is the absolute path of dir with symbolic links resolved, as the kernel reports mount
// points (bin/ may be a link).
func resolve(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		return resolved, nil
	}
	return abs, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
