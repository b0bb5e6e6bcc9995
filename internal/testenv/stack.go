package testenv

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// Stack is certpilot running as users run it, on a local control plane: the built edge in
// front of Pebble's tls-alpn-01 and http-01 ports, the built manager, and a Ready ClusterIssuer
// for Pebble. The end-to-end tests and `make demo` share it.
type Stack struct {
	Kube   *Kube
	Pebble *Pebble
	// Namespace holds the load balancer Deployment "edge" and the test's Certificates;
	// Namespace+"-system" holds the ClusterIssuer's account key.
	Namespace string
	// Kubeconfig is a kubeconfig file for the apiserver, as its administrator.
	Kubeconfig string
	// ManagerKubeconfig is the manager's: it is ManagerUser, whose only permissions are those
	// config/rbac grants (InstallManagerRBAC), or with StackOptions.ChartValues the chart
	// release's ServiceAccount, whose only permissions are those the chart grants.
	ManagerKubeconfig string
	// ManagerUser is the user of ManagerKubeconfig.
	ManagerUser string
	// Issuer is the name of the ClusterIssuer.
	Issuer string
	// MetricsAddress is where the manager serves /metrics (plain HTTP).
	MetricsAddress string

	Edge, Manager *Process
	// EdgeIPv6 is a second edge replica on [::1] (StackOptions.EdgeIPv6), nil without it.
	EdgeIPv6      *Process
	managerArgs   []string
	managerBinary string
	output        io.Writer
}

// StackOptions configure StartStack.
type StackOptions struct {
	// Namespace to create; it must not exist.
	Namespace string
	// ManagerBinary and EdgeBinary are the built binaries (see GoBuild).
	ManagerBinary, EdgeBinary string
	// Dir receives the kubeconfig.
	Dir string
	// Output, when set, receives the processes' output as they write it.
	Output io.Writer
	// ManagerArgs are added to the manager's flags.
	ManagerArgs []string
	// EdgeChallengeArgs replace the edge's challenge source flags (default: --load-balancer
	// edge), for example to run it as an earlier version did, on the single challenge Secret.
	EdgeChallengeArgs []string
	// EdgeArgs are added to the edge's flags, for example passthrough mode and an upstream.
	EdgeArgs []string
	// EdgeIPv6 starts a second edge replica, with the same flags, listening on [::1] at
	// Pebble's challenge ports (which Pebble's validator dials for an IPv6 address), and lists
	// those addresses as probe addresses of the load balancer Deployment.
	EdgeIPv6 bool
	// APIServerAddress, when set, is the host:port the manager and the edge reach the
	// apiserver at instead of its own (for example a proxy that cuts their connections); the
	// apiserver's serving certificate must be valid for it (127.0.0.1 is).
	APIServerAddress string
	// ACMEAddress, when set, is the host:port the ClusterIssuer reaches Pebble's ACME server at
	// instead of its own (for example a PebbleProxy); it must serve a certificate under
	// Pebble's CABundle and pass the Host header on.
	ACMEAddress string
	// ChartValues, when not nil, run the manager under the RBAC that charts/certpilot renders
	// with these values (an empty map: the chart's defaults) instead of config/rbac's. The
	// release is named Namespace, in Namespace+"-system" (so that the cluster resource
	// namespace is the release namespace), and installed with InstallChartRBAC; the manager is
	// that release's ServiceAccount, which nothing else binds (config/rbac's ClusterRoles are
	// bound to ManagerUser, for every other stack of the apiserver), and it gets the chart's
	// flags that decide what it watches (--watch-namespaces, --gateway-source,
	// --ingress-source, --inject-kinds) before ManagerArgs. The namespaces the values name must exist.
	ChartValues map[string]any
}

// EdgeDeployment is the name of the load balancer Deployment certpilot mounts challenges into.
const EdgeDeployment = "edge"

// LoopbackDials is the --allow-private-dials grant of the stack's manager: loopback, where Pebble,
// the edge and every test server listen.
const LoopbackDials = "127.0.0.0/8,::1/128"

// StartStack starts the edge and the manager against kube and pebble and creates a ClusterIssuer
// for pebble, waiting until it is Ready. Stop stops the processes.
func StartStack(ctx context.Context, kube *Kube, pebble *Pebble, opts StackOptions) (_ *Stack, err error) {
	s := &Stack{
		Kube: kube, Pebble: pebble, Namespace: opts.Namespace,
		Kubeconfig: filepath.Join(opts.Dir, "kubeconfig"), ManagerKubeconfig: filepath.Join(opts.Dir, "manager.kubeconfig"),
		Issuer:        opts.Namespace + "-pebble",
		managerBinary: opts.ManagerBinary, output: opts.Output,
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	config := kube.Config
	if opts.APIServerAddress != "" {
		config = rest.CopyConfig(kube.Config)
		config.Host = "https://" + opts.APIServerAddress
	}
	if err := WriteKubeconfig(config, s.Kubeconfig); err != nil {
		return nil, err
	}
	system := s.Namespace + "-system"
	for _, name := range []string{s.Namespace, system} {
		if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	chartArgs, err := s.setUpManagerUser(ctx, config, opts.ChartValues)
	if err != nil {
		return nil, err
	}
	// The load balancer Deployment. envtest runs no controllers, so it never rolls out: the edge
	// runs as a local process instead, watching the same challenge Secret.
	labels := map[string]string{"app": EdgeDeployment}
	if err := kube.Client.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: EdgeDeployment, Namespace: s.Namespace, Annotations: map[string]string{
			// The self-checks dial the edge on loopback instead of each name: the load
			// balancer's owner says where it listens.
			certpilotv1alpha1.AnnotationProbeAddresses: fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,[::1]:%d,[::1]:%d",
				pebble.TLSPort, pebble.HTTPPort, pebble.TLSPort, pebble.HTTPPort),
		}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "edge", Image: "certpilot-edge:dev"}}},
			},
		},
	}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}

	edgeHealth, err := FreePort()
	if err != nil {
		return nil, err
	}
	challengeArgs := opts.EdgeChallengeArgs
	if len(challengeArgs) == 0 {
		challengeArgs = []string{"--load-balancer", EdgeDeployment}
	}
	edgeArgs := append([]string{"--kubeconfig", s.Kubeconfig, "--namespace", s.Namespace}, challengeArgs...)
	edgeArgs = append(edgeArgs,
		"--https-bind-address", fmt.Sprintf("127.0.0.1:%d", pebble.TLSPort),
		"--http-bind-address", fmt.Sprintf("127.0.0.1:%d", pebble.HTTPPort),
		"--health-bind-address", fmt.Sprintf("127.0.0.1:%d", edgeHealth),
	)
	s.Edge, err = StartProcess("edge", opts.EdgeBinary, append(edgeArgs, opts.EdgeArgs...), opts.Output)
	if err != nil {
		return nil, err
	}
	if opts.EdgeIPv6 {
		health, err := FreePort()
		if err != nil {
			return nil, err
		}
		args := append([]string{"--kubeconfig", s.Kubeconfig, "--namespace", s.Namespace}, challengeArgs...)
		args = append(args, opts.EdgeArgs...)
		// The replica's own addresses come last: they win over any in EdgeArgs.
		args = append(args,
			"--https-bind-address", fmt.Sprintf("[::1]:%d", pebble.TLSPort),
			"--http-bind-address", fmt.Sprintf("[::1]:%d", pebble.HTTPPort),
			"--health-bind-address", fmt.Sprintf("127.0.0.1:%d", health),
		)
		if s.EdgeIPv6, err = StartProcess("edge-ipv6", opts.EdgeBinary, args, opts.Output); err != nil {
			return nil, err
		}
	}
	managerHealth, err := FreePort()
	if err != nil {
		return nil, err
	}
	metricsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	s.MetricsAddress = fmt.Sprintf("127.0.0.1:%d", metricsPort)
	s.managerArgs = []string{
		"--kubeconfig", s.ManagerKubeconfig,
		"--metrics-bind-address", s.MetricsAddress,
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", managerHealth),
		"--cluster-resource-namespace", system,
		// Everything here listens on loopback: the stack grants it to namespaced Issuers itself.
		"--allow-private-dials", LoopbackDials,
		// Benchmarks and suites issue thousands of certificates in one namespace: no budget
		// unless a test sets one (ManagerArgs come after and win).
		"--namespace-order-budget=0",
	}
	s.managerArgs = append(s.managerArgs, chartArgs...)
	s.managerArgs = append(s.managerArgs, opts.ManagerArgs...)
	if err := s.StartManager(); err != nil {
		return nil, err
	}

	acmeAddress := pebble.ListenAddress
	if opts.ACMEAddress != "" {
		acmeAddress = opts.ACMEAddress
	}
	issuer := &certpilotv1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: s.Issuer},
		Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
			Server:              "https://" + acmeAddress + "/dir",
			Email:               "ops@example.com",
			CABundle:            pebble.CABundle,
			PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "pebble-account"},
		}},
	}
	if err := kube.Client.Create(ctx, issuer); err != nil {
		return nil, err
	}
	rebinds := 0
	err = Poll(ctx, time.Minute, func() error {
		if exited, _ := s.Manager.Exited(); exited && rebinds < maxManagerRebinds && strings.Contains(s.Manager.Output(), "address already in use") {
			// A port chosen for the manager was taken before it bound it (FreePort: another
			// test process chose it too): start it again on other ports.
			rebinds++
			if err := s.rebindManager(); err != nil {
				return err
			}
		}
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(issuer), issuer); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(issuer.Status.Conditions, certpilotv1alpha1.ConditionReady) {
			return fmt.Errorf("ClusterIssuer %s is not Ready: %+v", issuer.Name, issuer.Status.Conditions)
		}
		return nil
	})
	if err != nil {
		// Say why: a manager that exited (a port taken since it was chosen) or never got its lease.
		output := s.Manager.Output()
		output = output[max(0, len(output)-8000):]
		exited, exitErr := s.Manager.Exited()
		return nil, fmt.Errorf("%w (manager exited: %v %v); the manager's last output:\n%s", err, exited, exitErr, output)
	}
	if !strings.HasPrefix(issuer.Status.AccountURI, "https://"+acmeAddress+"/") {
		return nil, fmt.Errorf("ClusterIssuer accountURI %q is not at %s", issuer.Status.AccountURI, acmeAddress)
	}
	return s, nil
}

// StartManager starts the manager (again, after StopManager).
func (s *Stack) StartManager() error {
	manager, err := StartProcess("manager", s.managerBinary, s.managerArgs, s.output)
	if err != nil {
		return err
	}
	s.Manager = manager
	return nil
}

// maxManagerRebinds is how many times StartStack starts a manager again on other ports after
// it found one of its ports taken.
const maxManagerRebinds = 3

// rebindManager starts the manager again with new metrics and health ports.
func (s *Stack) rebindManager() error {
	args, err := withFreshPorts(s.managerArgs)
	if err != nil {
		return err
	}
	s.managerArgs = args
	for i, arg := range args {
		if arg == "--metrics-bind-address" && i+1 < len(args) {
			s.MetricsAddress = args[i+1]
		}
	}
	return s.StartManager()
}

// withFreshPorts returns args with a newly chosen free port after each --metrics-bind-address
// and --health-probe-bind-address.
func withFreshPorts(args []string) ([]string, error) {
	fresh := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		fresh = append(fresh, args[i])
		if (args[i] == "--metrics-bind-address" || args[i] == "--health-probe-bind-address") && i+1 < len(args) {
			port, err := FreePort()
			if err != nil {
				return nil, err
			}
			fresh = append(fresh, fmt.Sprintf("127.0.0.1:%d", port))
			i++
		}
	}
	return fresh, nil
}

// RestartManager stops the manager and starts it again with extraArgs after its flags (a flag
// given twice takes the later value).
func (s *Stack) RestartManager(extraArgs ...string) error {
	s.StopManager()
	s.managerArgs = append(slices.Clip(s.managerArgs), extraArgs...)
	return s.StartManager()
}

// StartReplica starts one more manager with the stack's flags, its own metrics and health
// ports, and extraArgs (for example --leader-elect), as a second replica of a Deployment. The
// caller stops it.
func (s *Stack) StartReplica(name string, extraArgs ...string) (*Process, error) {
	args, err := withFreshPorts(s.managerArgs)
	if err != nil {
		return nil, err
	}
	return StartProcess(name, s.managerBinary, append(args, extraArgs...), s.output)
}

// StopManager stops the manager as a Deployment rollout would (SIGTERM).
func (s *Stack) StopManager() {
	if s.Manager != nil {
		s.Manager.Stop(20 * time.Second)
	}
}

// KillManager kills the manager with SIGKILL: no graceful shutdown, as in a crash.
func (s *Stack) KillManager() {
	if s.Manager != nil {
		s.Manager.Kill()
	}
}

// Stop stops the manager and the edge and deletes the ClusterIssuer.
func (s *Stack) Stop() {
	s.StopManager()
	if s.Edge != nil {
		s.Edge.Stop(20 * time.Second)
	}
	if s.EdgeIPv6 != nil {
		s.EdgeIPv6.Stop(20 * time.Second)
	}
	_ = s.Kube.Client.Delete(context.Background(), &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: s.Issuer}})
}

// TLSALPN01Certificate returns a Certificate validated with tls-alpn-01 through the stack's
// edge. Pebble's validator dials 127.0.0.1:<TLSPort> for every name, and so does the
// self-check.
func (s *Stack) TLSALPN01Certificate(name string, dnsNames ...string) *certpilotv1alpha1.Certificate {
	return &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   dnsNames,
			SecretName: name + "-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: s.Issuer},
			Solver: &certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{
				LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: EdgeDeployment},
				ProbeAddress: fmt.Sprintf("127.0.0.1:%d", s.Pebble.TLSPort),
			}},
		},
	}
}

// Poll calls check every 250 ms until it returns nil, ctx ends or timeout passes; it returns
// check's last error.
func Poll(ctx context.Context, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not done after %s: %w", timeout, err)
		case <-ticker.C:
		}
	}
}

// AllowProbeAddress lists address in the edge Deployment's probe-addresses annotation, as the
// load balancer's owner would, so that a Certificate may point its self-check there.
func (s *Stack) AllowProbeAddress(ctx context.Context, address string) error {
	deployment := &appsv1.Deployment{}
	if err := s.Kube.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: EdgeDeployment}, deployment); err != nil {
		return err
	}
	patch := client.MergeFrom(deployment.DeepCopy())
	deployment.Annotations[certpilotv1alpha1.AnnotationProbeAddresses] += "," + address
	return s.Kube.Client.Patch(ctx, deployment, patch)
}

// ChallengeResponses returns every challenge response published for the edge: the union of its
// challenge shard Secrets' data.
func (s *Stack) ChallengeResponses(ctx context.Context) (map[string][]byte, error) {
	var secrets corev1.SecretList
	if err := s.Kube.Client.List(ctx, &secrets, client.InNamespace(s.Namespace),
		client.MatchingLabels{certpilotv1alpha1.LabelLoadBalancer: EdgeDeployment, certpilotv1alpha1.LabelChallenges: "true"}); err != nil {
		return nil, err
	}
	responses := map[string][]byte{}
	for _, secret := range secrets.Items {
		for key, value := range secret.Data {
			responses[key] = value
		}
	}
	return responses, nil
}
