// Command demo runs certpilot end to end on this machine, as `make demo` does: a local control
// plane (kube-apiserver and etcd, through envtest), a local ACME CA (Pebble), the manager and
// the edge built from this tree, and one Certificate that Pebble validates with tls-alpn-01
// through the edge. It prints the flow as it happens, the issued certificate and its Events,
// then stops everything.
//
//	go run ./hack/demo            # issue one certificate, show it, stop
//	go run ./hack/demo --keep     # then keep running until Ctrl-C, to watch it renew
//	go run ./hack/demo --verbose  # also stream the manager, edge and Pebble logs
//
// The kube-apiserver, etcd, kubectl and Pebble binaries come from bin/, built by
// `make test-binaries`. Nothing listens beyond 127.0.0.1, and nothing outlives the demo.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

const (
	namespace = "demo"
	certName  = "www"
	// validity is the lifetime of the certificates Pebble issues: short enough that the
	// renewal, at half of it, happens while a `--keep` demo runs.
	validity = 10 * time.Minute
)

var dnsNames = []string{"www.demo.test", "demo.test"}

func main() {
	// Its own flag set: controller-runtime registers --kubeconfig on the global one.
	flags := flag.NewFlagSet("demo", flag.ExitOnError)
	keep := flags.Bool("keep", false, "after issuance, keep everything running until Ctrl-C, to watch the certificate renew")
	verbose := flags.Bool("verbose", false, "stream the manager, edge and Pebble output (by default it is shown only on failure)")
	timeout := flags.Duration("timeout", 3*time.Minute, "how long the Certificate may take to become Ready")
	stateDir := flags.String("state-dir", "", "with --keep: write kubeconfig and env (addresses of the apiserver and Pebble) here, for `make local-up`")
	_ = flags.Parse(os.Args[1:]) // ExitOnError: exits on a bad flag

	// The demo's own client and envtest log through controller-runtime; the processes' logs are
	// what matters, and --verbose streams those.
	ctrllog.SetLogger(logr.Discard())

	// Ctrl-C and SIGTERM cancel ctx; every deferred stop in run still runs.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	d := &demo{start: time.Now(), keep: *keep, timeout: *timeout, stateDir: *stateDir, output: &testenv.SyncBuffer{}}
	if *verbose {
		d.processOutput = os.Stderr
	} else {
		d.processOutput = d.output
	}
	err := d.run(ctx)
	interrupted := ctx.Err() != nil
	stop()

	switch {
	case interrupted && d.issued && d.keep:
		d.logf("stopped")
	case interrupted:
		fmt.Fprintln(os.Stderr, "demo: interrupted; everything it started is stopped")
		os.Exit(130)
	case err != nil:
		if output := d.output.String(); output != "" && !*verbose {
			fmt.Fprintf(os.Stderr, "\n--- output of the manager, the edge and Pebble ---\n%s--- end of output ---\n\n", output)
		}
		fmt.Fprintf(os.Stderr, "demo FAILED: %v\n", err)
		os.Exit(1)
	}
}

// demo is one run: what it was asked to do and what it has seen.
type demo struct {
	start time.Time
	keep  bool
	// stateDir, when set, receives the kubeconfig and an env file while --keep runs.
	stateDir string
	timeout  time.Duration
	// output keeps the processes' output for a failure report; processOutput is where the
	// processes write (output, or stderr under --verbose).
	output        *testenv.SyncBuffer
	processOutput io.Writer
	// progress is what the Certificate's status has shown so far; issued is set once it is
	// Ready.
	progress progress
	issued   bool
}

// logf prints one progress line, stamped with the time since the demo started.
func (d *demo) logf(format string, args ...any) {
	fmt.Printf("%8s  %s\n", time.Since(d.start).Round(100*time.Millisecond), fmt.Sprintf(format, args...))
}

func (d *demo) run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "certpilot-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// Build first: a tree that does not compile fails before anything starts.
	d.logf("building the manager (.), the edge (./cmd/edge) and the kubectl plugin (./cmd/kubectl-certpilot)")
	managerBinary, edgeBinary := filepath.Join(dir, "manager"), filepath.Join(dir, "edge")
	for pkg, binary := range map[string]string{".": managerBinary, "./cmd/edge": edgeBinary,
		"./cmd/kubectl-certpilot": filepath.Join(dir, "kubectl-certpilot")} {
		if err := testenv.GoBuild(ctx, pkg, binary); err != nil {
			return err
		}
	}

	d.logf("starting a local control plane: kube-apiserver and etcd from bin/k8s")
	kube, err := testenv.StartKube()
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", withBuildHint(err))
	}
	defer func() {
		d.logf("stopping the control plane")
		if err := kube.Stop(); err != nil {
			d.logf("stopping the control plane: %v", err)
		}
	}()
	d.logf("control plane up at %s, certpilot's CRDs installed", kube.Config.Host)

	d.logf("starting Pebble, a local ACME CA (certificates valid %s)", validity)
	pebbleCtx, cancel := context.WithTimeout(ctx, time.Minute)
	pebble, err := testenv.RunPebble(pebbleCtx, testenv.PebbleOptions{
		DefaultValidity: validity,
		Dir:             dir,
		Output:          d.processOutput,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("starting Pebble: %w", withBuildHint(err))
	}
	defer func() {
		d.logf("stopping Pebble")
		pebble.Stop()
	}()
	d.logf("Pebble's ACME directory is %s", pebble.DirectoryURL())

	d.logf("starting the edge (on Pebble's tls-alpn-01 port %d) and the manager; waiting for the ClusterIssuer", pebble.TLSPort)
	stack, err := testenv.StartStack(ctx, kube, pebble, testenv.StackOptions{
		Namespace: namespace, ManagerBinary: managerBinary, EdgeBinary: edgeBinary,
		Dir: dir, Output: d.processOutput,
	})
	if err != nil {
		return fmt.Errorf("starting the manager and the edge: %w", err)
	}
	defer func() {
		d.logf("stopping the manager and the edge")
		stack.Stop()
	}()
	d.logf("ClusterIssuer %s is Ready: an ACME account is registered at Pebble", stack.Issuer)

	cert := stack.TLSALPN01Certificate(certName, dnsNames...)
	if err := kube.Client.Create(ctx, cert); err != nil {
		return fmt.Errorf("creating the Certificate: %w", err)
	}
	d.logf("created Certificate %s/%s for %s", namespace, certName, strings.Join(dnsNames, ", "))

	if err := d.waitReady(ctx, stack, cert); err != nil {
		return err
	}
	d.issued = true

	fmt.Println()
	if err := kubectlGetCertificates(ctx, stack); err != nil {
		return err
	}
	fmt.Println()
	if err := describeSecret(ctx, stack, cert); err != nil {
		return err
	}
	fmt.Println()
	if err := printEvents(ctx, kube.Client, cert); err != nil {
		return err
	}
	fmt.Println()
	if err := kubectlCertpilotLs(ctx, stack, dir); err != nil {
		return err
	}
	fmt.Println()

	if d.keep {
		return d.keepRunning(ctx, stack, cert)
	}
	d.logf("done: the certificate was issued end to end (run with --keep to watch it renew)")
	return nil
}

// kubectlCertpilotLs shows the operators' view through the kubectl plugin, found by kubectl on
// PATH as users install it.
func kubectlCertpilotLs(ctx context.Context, stack *testenv.Stack, pluginDir string) error {
	kubectl, err := testenv.KubectlPath()
	if err != nil {
		return err
	}
	fmt.Printf("$ kubectl certpilot ls -n %s\n", namespace)
	// kubectl looks for a plugin up to the first flag: the flags come after "certpilot ls".
	cmd := exec.CommandContext(ctx, kubectl, "certpilot", "ls", "-n", namespace, "--kubeconfig", stack.Kubeconfig)
	cmd.Env = append(os.Environ(), "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl certpilot ls: %w", err)
	}
	return nil
}

// withBuildHint adds the command that builds the binaries in bin/ to an error that lacks it.
func withBuildHint(err error) error {
	if strings.Contains(err.Error(), testenv.BuildCommand) {
		return err
	}
	return fmt.Errorf("%w\n(kube-apiserver, etcd, kubectl and Pebble are built into bin/ by `%s`)", err, testenv.BuildCommand)
}

// waitReady polls the Certificate, printing each step of the flow as its status shows it, until
// it is Ready, fails or the timeout passes.
func (d *demo) waitReady(ctx context.Context, stack *testenv.Stack, cert *certpilotv1alpha1.Certificate) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.poll(ctx, stack, cert, func() (bool, error) {
		if isIssued(cert) {
			return true, nil
		}
		if c := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled); c != nil && c.Status == metav1.ConditionTrue {
			return false, fmt.Errorf("the Certificate is stalled: %s", statusMessage(cert))
		}
		if cert.Status.FailedIssuanceAttempts > 0 {
			return false, fmt.Errorf("issuance failed: %s", statusMessage(cert))
		}
		return false, nil
	})
}

// keepRunning prints the renewals until Ctrl-C.
func (d *demo) keepRunning(ctx context.Context, stack *testenv.Stack, cert *certpilotv1alpha1.Certificate) error {
	kubectl, err := testenv.KubectlPath()
	if err != nil {
		return err
	}
	kubeconfig := stack.Kubeconfig
	if d.stateDir != "" {
		if kubeconfig, err = writeState(d.stateDir, stack, kubectl); err != nil {
			return err
		}
		defer os.Remove(filepath.Join(d.stateDir, "env"))
		fmt.Printf("Wrote %s and %s.\n", kubeconfig, filepath.Join(d.stateDir, "env"))
	}
	fmt.Println("Everything keeps running; press Ctrl-C to stop it. To watch from another terminal:")
	fmt.Printf("  %s --kubeconfig %s get certificates -n %s -w\n", kubectl, kubeconfig, namespace)
	if renewal := cert.Status.RenewalTime; renewal != nil {
		fmt.Printf("The certificate is valid for %s; certpilot renews it at %s (in %s).\n",
			validity, renewal.UTC().Format(time.TimeOnly+" MST"), time.Until(renewal.Time).Round(time.Second))
	}
	fmt.Println()

	// Each renewal prints its flow as the first issuance did, with a new order.
	return d.poll(ctx, stack, cert, func() (bool, error) { return false, nil })
}

// writeState writes what `make local-up` users need to apply their own manifests: a kubeconfig
// and an env file (KUBECONFIG, KUBECTL, the ACME directory and its CA bundle, the edge's ports).
// The env file is written last: its presence means the environment is up.
func writeState(dir string, stack *testenv.Stack, kubectl string) (kubeconfig string, err error) {
	if dir, err = filepath.Abs(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := testenv.WriteKubeconfig(stack.Kube.Config, kubeconfig); err != nil {
		return "", err
	}
	caBundle := filepath.Join(dir, "pebble-https-ca.pem")
	if err := os.WriteFile(caBundle, stack.Pebble.CABundle, 0o644); err != nil {
		return "", err
	}
	env := fmt.Sprintf(`# certpilot local environment (make local-up); source it: . %[1]s/env
export KUBECONFIG=%[2]s
export KUBECTL=%[3]s
# Pebble's ACME directory; put the CA bundle's PEM into an Issuer's spec.acme.caBundle.
export ACME_DIRECTORY=%[4]s
export ACME_CA_BUNDLE=%[5]s
# The ClusterIssuer for Pebble and the load balancer Deployment the edge stands for.
export CLUSTER_ISSUER=%[6]s
export EDGE_NAMESPACE=%[7]s EDGE_DEPLOYMENT=%[8]s
# Where the edge listens: Pebble validates tls-alpn-01 and http-01 there (use as probeAddress).
export EDGE_TLS_ADDRESS=127.0.0.1:%[9]d EDGE_HTTP_ADDRESS=127.0.0.1:%[10]d
`, dir, kubeconfig, kubectl, stack.Pebble.DirectoryURL(), caBundle, stack.Issuer, stack.Namespace,
		testenv.EdgeDeployment, stack.Pebble.TLSPort, stack.Pebble.HTTPPort)
	return kubeconfig, os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o644)
}

// poll gets the Certificate every 200 ms, prints what changed and calls check until it reports
// done, fails or ctx ends. A manager or edge that exits fails the wait: nothing would happen
// any more.
func (d *demo) poll(ctx context.Context, stack *testenv.Stack, cert *certpilotv1alpha1.Certificate, check func() (bool, error)) error {
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		for _, process := range []*testenv.Process{stack.Manager, stack.Edge} {
			if exited, err := process.Exited(); exited {
				return fmt.Errorf("the %s exited: %v", process.Name, err)
			}
		}
		if err := stack.Kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil && ctx.Err() == nil {
			return fmt.Errorf("reading the Certificate: %w", err)
		}
		for _, line := range d.progress.update(cert) {
			d.logf("%s", line)
		}
		if done, err := check(); done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the Certificate is not Ready after %s: %s", d.timeout, statusMessage(cert))
			}
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// isIssued reports whether the Certificate's current spec is served by a valid certificate.
func isIssued(cert *certpilotv1alpha1.Certificate) bool {
	return cert.Status.ObservedGeneration == cert.Generation && cert.Status.SerialNumber != "" &&
		meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady)
}

// statusMessage is the condition that best explains where the Certificate is: Stalled or
// Reconciling when True (they carry the error), else Ready.
func statusMessage(cert *certpilotv1alpha1.Certificate) string {
	conditions := cert.Status.Conditions
	c := meta.FindStatusCondition(conditions, certpilotv1alpha1.ConditionStalled)
	if c == nil || c.Status != metav1.ConditionTrue {
		c = meta.FindStatusCondition(conditions, certpilotv1alpha1.ConditionReconciling)
	}
	if c == nil || c.Status != metav1.ConditionTrue {
		c = meta.FindStatusCondition(conditions, certpilotv1alpha1.ConditionReady)
	}
	if c == nil {
		return "no conditions yet (is the manager reconciling it?)"
	}
	return fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
}

// progress turns successive states of a Certificate into lines that each say once what
// happened. A line's key includes the order URL, so a renewal's new order prints its own lines.
type progress struct {
	printed map[string]bool
	serials int // certificates seen so far: the first is issued, the next ones renewed
}

func (p *progress) update(cert *certpilotv1alpha1.Certificate) []string {
	if p.printed == nil {
		p.printed = map[string]bool{}
	}
	var lines []string
	add := func(key, format string, args ...any) {
		if !p.printed[key] {
			p.printed[key] = true
			lines = append(lines, fmt.Sprintf(format, args...))
		}
	}
	status := cert.Status
	if order := status.Order; order != nil {
		add(order.URL, "ACME order created for %s: %s", strings.Join(order.DNSNames, ", "), order.URL)
		// Past pending, the CA has validated every name; the challenges say so only once the
		// certificate is stored.
		validated := order.State == "ready" || order.State == "processing" || order.State == "valid"
		for _, c := range order.Challenges {
			key := order.URL + " " + c.DNSName + " "
			switch {
			case c.State == "self-check-failed":
				add(key+c.Reason, "%s: the edge does not serve the %s response yet; retrying: %s", c.DNSName, c.Type, c.Reason)
			case c.State == "invalid":
				add(key+"invalid", "%s: the CA could not validate %s: %s", c.DNSName, c.Type, c.Reason)
			case c.State == "presented" || c.State == "processing" || c.State == "valid" || validated:
				// The CA is asked to validate only after the self-check passed.
				add(key+"presented", "%s: %s response presented through the edge; self-check passed", c.DNSName, c.Type)
				if c.State != "presented" {
					add(key+"processing", "%s: Pebble is validating it (connects to the edge with ALPN acme-tls/1)", c.DNSName)
				}
				if c.State == "valid" || validated {
					add(key+"valid", "%s: validated by Pebble", c.DNSName)
				}
			}
		}
		switch order.State {
		case "ready":
			add(order.URL+" ready", "ACME order is ready: sending the CSR")
		case "processing":
			add(order.URL+" processing", "ACME order is processing: Pebble is signing the certificate")
		case "valid":
			add(order.URL+" valid", "ACME order is valid: certificate downloaded and stored in Secret %s", cert.Spec.SecretName)
		case "invalid":
			add(order.URL+" invalid", "ACME order is invalid: %s", statusMessage(cert))
		}
	}
	if n := status.FailedIssuanceAttempts; n > 0 {
		add(fmt.Sprintf("failure %d %s", n, statusTime(status.LastFailureTime)), "issuance failed (attempt %d): %s", n, statusMessage(cert))
	}
	if isIssued(cert) && !p.printed[status.SerialNumber] {
		verb := "issued"
		if p.serials > 0 {
			verb = "renewed"
		}
		p.serials++
		add(status.SerialNumber, "certificate %s: serial %s, valid until %s, renewal at %s; Certificate is Ready",
			verb, status.SerialNumber, statusTime(status.NotAfter), statusTime(status.RenewalTime))
	}
	return lines
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func statusTime(t *metav1.Time) string {
	if t == nil {
		return "(not set)"
	}
	return formatTime(t.Time)
}

// kubectlGetCertificates shows what a user of the cluster sees, with the kubectl built with the
// apiserver.
func kubectlGetCertificates(ctx context.Context, stack *testenv.Stack) error {
	kubectl, err := testenv.KubectlPath()
	if err != nil {
		return err
	}
	fmt.Printf("$ kubectl get certificates -n %s\n", namespace)
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", stack.Kubeconfig, "get", "certificates", "-n", namespace)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl get certificates: %w", err)
	}
	return nil
}

// describeSecret summarizes the certificate in the Secret and checks that it chains to Pebble's
// root. The private key (tls.key) is never printed.
func describeSecret(ctx context.Context, stack *testenv.Stack, cert *certpilotv1alpha1.Certificate) error {
	secret := &corev1.Secret{}
	key := client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}
	if err := stack.Kube.Client.Get(ctx, key, secret); err != nil {
		return fmt.Errorf("reading the certificate Secret: %w", err)
	}
	chain, err := pki.ParseChain(secret.Data[corev1.TLSCertKey])
	if err != nil {
		return fmt.Errorf("Secret %s, %s: %w", key, corev1.TLSCertKey, err)
	}
	leaf := chain[0]

	verified := "yes"
	roots := x509.NewCertPool()
	if rootsPEM, err := stack.Pebble.Roots(); err != nil || !roots.AppendCertsFromPEM(rootsPEM) {
		verified = fmt.Sprintf("could not fetch Pebble's root: %v", err)
	} else {
		intermediates := x509.NewCertPool()
		for _, c := range chain[1:] {
			intermediates.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, DNSName: cert.Spec.DNSNames[0]}); err != nil {
			verified = "NO: " + err.Error()
		}
	}
	algorithm, size, _ := pki.PublicKeyAlgorithm(leaf.PublicKey)
	keyDescription := fmt.Sprintf("%s %d bits", algorithm, size)
	if algorithm == pki.ECDSA {
		keyDescription = fmt.Sprintf("ECDSA P-%d", size)
	}
	keys := make([]string, 0, len(secret.Data))
	for k := range secret.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	fmt.Printf("Secret %s (%s; keys %s):\n", key, secret.Type, strings.Join(keys, ", "))
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	subject := leaf.Subject.String()
	if subject == "" {
		// certpilot asks for the first name as CommonName; Pebble, like Let's Encrypt's current
		// profiles, puts the names only in the subject alternative names.
		subject = "(empty: the CA lists the names only as DNS names)"
	}
	fmt.Fprintf(w, "  subject\t%s\n", subject)
	fmt.Fprintf(w, "  DNS names\t%s\n", strings.Join(leaf.DNSNames, ", "))
	fmt.Fprintf(w, "  issuer\t%s (%d intermediate in tls.crt)\n", leaf.Issuer.CommonName, len(chain)-1)
	fmt.Fprintf(w, "  serial\t%x\n", leaf.SerialNumber)
	fmt.Fprintf(w, "  not before\t%s\n", formatTime(leaf.NotBefore))
	fmt.Fprintf(w, "  not after\t%s (valid %s)\n", formatTime(leaf.NotAfter), leaf.NotAfter.Sub(leaf.NotBefore).Round(time.Second))
	if r := cert.Status.RenewalTime; r != nil {
		fmt.Fprintf(w, "  renewal\t%s (status.renewalTime, in %s)\n", formatTime(r.Time), time.Until(r.Time).Round(time.Second))
	}
	fmt.Fprintf(w, "  key\t%s (a new key per issuance; tls.key is not shown)\n", keyDescription)
	fmt.Fprintf(w, "  chains to Pebble's root\t%s\n", verified)
	return w.Flush()
}

// printEvents prints the Certificate's Events. The manager records them asynchronously, so the
// Issued event may arrive a moment after Ready: wait a little for it.
func printEvents(ctx context.Context, c client.Client, cert *certpilotv1alpha1.Certificate) error {
	var events []eventsv1.Event
	err := testenv.Poll(ctx, 10*time.Second, func() error {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(cert.Namespace)); err != nil {
			return err
		}
		events = slices.DeleteFunc(list.Items, func(e eventsv1.Event) bool { return e.Regarding.UID != cert.UID })
		if !slices.ContainsFunc(events, func(e eventsv1.Event) bool { return e.Reason == "Issued" }) {
			return errors.New("no Issued event yet")
		}
		return nil
	})
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	slices.SortFunc(events, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })

	fmt.Printf("Events of Certificate %s/%s:\n", cert.Namespace, cert.Name)
	if len(events) == 0 {
		fmt.Println("  (none)")
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  TYPE\tREASON\tFROM\tMESSAGE")
	for _, e := range events {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", e.Type, e.Reason, e.ReportingController, e.Note)
	}
	return w.Flush()
}
