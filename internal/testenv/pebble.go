package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// PebbleProfile is one ACME issuance profile Pebble offers.
type PebbleProfile struct {
	Description string
	// ValidityPeriod is the lifetime of the certificates issued under the profile; Pebble counts
	// it in whole seconds. Zero means Pebble's default (five years).
	ValidityPeriod time.Duration
}

// PebbleOptions configures RunPebble and StartPebble. The zero value is a Pebble with one
// profile ("default"), no external account binding, no nonce faults, no authorization reuse and
// no validation sleeps: the fastest deterministic CA.
type PebbleOptions struct {
	// HTTPPort and TLSPort are the ports Pebble's validation authority dials for http-01 and
	// tls-alpn-01 (on 127.0.0.1, through challtestsrv's DNS). Zero picks a free port.
	HTTPPort int
	TLSPort  int

	// DNSServer is the resolver Pebble's validation authority uses ("host:port"). Empty means the
	// harness's challtestsrv, whose records SetTXT and AddA manage.
	DNSServer string

	// ExternalAccountBindingRequired makes newAccount refuse requests without an EAB.
	ExternalAccountBindingRequired bool
	// ExternalAccountMACKeys maps EAB key IDs to their base64url-encoded HMAC keys.
	ExternalAccountMACKeys map[string]string

	// Profiles are offered besides "default". Pebble assigns a random profile to orders that name
	// none when several exist, so clients of a Pebble with extra profiles should name one.
	Profiles map[string]PebbleProfile
	// DefaultValidity is the "default" profile's validity period (zero: Pebble's default).
	DefaultValidity time.Duration

	// NonceRejectPercent is PEBBLE_WFE_NONCEREJECT: how often a good nonce is rejected as bad.
	// Pebble's own default is 5; the harness's is 0 so that tests are deterministic.
	NonceRejectPercent int
	// AuthzReusePercent is PEBBLE_AUTHZREUSE: how often valid authorizations are reused.
	// Pebble's own default is 50; the harness's is 0 so that orders have fresh challenges (Pebble
	// still reuses a valid authorization 1 time in 100 at 0: it compares rand.Intn(100) > 0).
	AuthzReusePercent int
	// AlwaysValid sets PEBBLE_VA_ALWAYS_VALID: every challenge validates without being checked.
	AlwaysValid bool

	// DefaultIPv4 is the address challtestsrv's DNS answers for every name without an A record
	// of its own (AddA). Empty means 127.0.0.1.
	DefaultIPv4 string

	// ListenHost is the address Pebble's ACME directory listens on; its HTTPS certificate names
	// it too. Empty means 127.0.0.1. The single-node cluster (internal/testcluster) sets the
	// bridge's address, where pods reach it.
	ListenHost string

	// Dir holds the generated configuration and Pebble's HTTPS key. Empty means a new temporary
	// directory that Stop removes.
	Dir string

	// Output, when set, also receives both processes' output as it is written (a demo prints it;
	// tests leave it nil and get the output logged on failure).
	Output io.Writer
}

// Pebble is a running Pebble ACME server and its pebble-challtestsrv DNS server.
type Pebble struct {
	// ListenAddress is the ACME server's host:port (HTTPS).
	ListenAddress string
	// ManagementAddress is Pebble's management interface host:port (HTTPS): roots,
	// intermediates, renewal information.
	ManagementAddress string
	// DNSAddress is challtestsrv's DNS server host:port (UDP and TCP).
	DNSAddress string
	// ChallengeManagementAddress is challtestsrv's management API host:port (plain HTTP).
	ChallengeManagementAddress string
	// HTTPPort and TLSPort are where Pebble's validation authority connects for http-01 and
	// tls-alpn-01 on 127.0.0.1; a test responder binds them.
	HTTPPort int
	TLSPort  int
	// CABundle is the PEM certificate of the throwaway CA that signed Pebble's HTTPS
	// certificate. ACME clients add it to their trust to reach the directory. It is not the CA
	// that signs issued certificates: that one is Roots().
	CABundle []byte

	client *http.Client // trusts CABundle
	// certFile and keyFile are Pebble's HTTPS certificate and key (signed by CABundle's CA),
	// which a proxy in front of it serves too (StartProxy).
	certFile, keyFile string
	output            *SyncBuffer
	procs             []*process
	removeDir         string // removed by Stop when RunPebble created it
	// pebbleCmd and startOutput are how Pebble was started, for Restart.
	pebbleCmd   *exec.Cmd
	startOutput io.Writer
	stopOnce    sync.Once
}

// process is a started command and the result of waiting for it.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited; err is then set
	err  error
}

// StartPebble runs Pebble for a test and stops it when the test ends. It skips the test under
// -short and fails it when the binaries are missing or Pebble does not come up. When the test
// fails, both processes' output is logged.
func StartPebble(tb testing.TB, opts PebbleOptions) *Pebble {
	tb.Helper()
	SkipIfShort(tb)
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pebble, err := RunPebble(ctx, opts)
	if err != nil {
		tb.Fatalf("Starting Pebble: %v", err)
	}
	tb.Cleanup(func() {
		pebble.Stop()
		if tb.Failed() {
			tb.Logf("Pebble and challtestsrv output:\n%s", pebble.Output())
		}
	})
	return pebble
}

// RunPebble starts pebble-challtestsrv and Pebble from BinDir on free loopback ports with a
// generated configuration, and returns when Pebble's directory answers. ctx bounds the start
// only: the processes run until Stop. On error nothing is left running, and the error carries
// the processes' output. A non-test program (the demo) uses it directly; tests use StartPebble.
func RunPebble(ctx context.Context, opts PebbleOptions) (_ *Pebble, err error) {
	pebbleBinary, err := binaryPath("pebble/pebble")
	if err != nil {
		return nil, err
	}
	challBinary, err := binaryPath("pebble/pebble-challtestsrv")
	if err != nil {
		return nil, err
	}

	p := &Pebble{HTTPPort: opts.HTTPPort, TLSPort: opts.TLSPort, output: &SyncBuffer{}}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "certpilot-pebble-"); err != nil {
			return nil, err
		}
		p.removeDir = dir
	}
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()

	if err := p.choosePorts(opts.ListenHost); err != nil {
		return nil, err
	}
	if p.certFile, p.keyFile, err = p.writeServingCertificate(dir); err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "pebble-config.json")
	if err := writePebbleConfig(configFile, p, opts, p.certFile, p.keyFile); err != nil {
		return nil, err
	}

	var output io.Writer = p.output
	if opts.Output != nil {
		output = io.MultiWriter(p.output, opts.Output)
	}
	defaultIPv4 := opts.DefaultIPv4
	if defaultIPv4 == "" {
		defaultIPv4 = "127.0.0.1"
	}
	chall := exec.Command(challBinary,
		"-defaultIPv4", defaultIPv4,
		// Pebble's VA looks up AAAA first; the default answer ::1 would send validation to [::1].
		"-defaultIPv6", "",
		"-dnsserver", p.DNSAddress,
		"-management", p.ChallengeManagementAddress,
		// Disable challtestsrv's own responders so that tests can bind HTTPPort and TLSPort.
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
	if err := p.start("pebble-challtestsrv", chall, output); err != nil {
		return nil, err
	}

	dnsServer := opts.DNSServer
	if dnsServer == "" {
		dnsServer = p.DNSAddress
	}
	pebbleCmd := exec.Command(pebbleBinary, "-config", configFile, "-dnsserver", dnsServer)
	pebbleCmd.Dir = dir
	pebbleCmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT="+strconv.Itoa(opts.NonceRejectPercent),
		"PEBBLE_AUTHZREUSE="+strconv.Itoa(opts.AuthzReusePercent),
	)
	if opts.AlwaysValid {
		pebbleCmd.Env = append(pebbleCmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	if err := p.start("pebble", pebbleCmd, output); err != nil {
		return nil, err
	}
	p.pebbleCmd, p.startOutput = pebbleCmd, output

	if err := p.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("%w\noutput:\n%s", err, p.Output())
	}
	return p, nil
}

// choosePorts picks free loopback ports for everything the options leave open, below the
// kernel's ephemeral range (ListenFree). The ports are free when chosen, not reserved: only a
// process that asks for the same port could take one before Pebble binds it.
func (p *Pebble) choosePorts(listenHost string) error {
	// Hold every chosen port open until all are chosen, so that no two are the same.
	var ports []int
	for range 5 {
		listener, err := ListenFree()
		if err != nil {
			return err
		}
		defer listener.Close()
		ports = append(ports, listener.Addr().(*net.TCPAddr).Port)
	}
	dnsPort := 0
	for dnsPort == 0 || slices.Contains(ports, dnsPort) {
		port, err := FreeUDPAndTCPPort()
		if err != nil {
			return err
		}
		dnsPort = port
	}
	p.ListenAddress = loopback(ports[0])
	if listenHost != "" {
		listener, err := net.Listen("tcp", net.JoinHostPort(listenHost, "0"))
		if err != nil {
			return err
		}
		defer listener.Close()
		p.ListenAddress = listener.Addr().String()
	}
	p.ManagementAddress = loopback(ports[1])
	p.ChallengeManagementAddress = loopback(ports[2])
	p.DNSAddress = loopback(dnsPort)
	if p.HTTPPort == 0 {
		p.HTTPPort = ports[3]
	}
	if p.TLSPort == 0 {
		p.TLSPort = ports[4]
	}
	return nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// start runs cmd with its output going to output and records it for Stop.
func (p *Pebble) start(name string, cmd *exec.Cmd, output io.Writer) error {
	cmd.Stdout = &prefixWriter{prefix: name + ": ", w: output}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	proc := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		proc.err = cmd.Wait()
		close(proc.done)
	}()
	p.procs = append(p.procs, proc)
	return nil
}

// waitReady polls until challtestsrv's management API accepts connections and Pebble's
// directory answers, failing early when a process exits.
func (p *Pebble) waitReady(ctx context.Context) error {
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	var lastErr error
	for {
		for _, proc := range p.procs {
			select {
			case <-proc.done:
				return fmt.Errorf("%s exited during start: %v", proc.name, proc.err)
			default:
			}
		}
		if lastErr = p.ready(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for Pebble at %s: %w (last error: %v)", p.DirectoryURL(), ctx.Err(), lastErr)
		case <-ticker.C:
		}
	}
}

func (p *Pebble) ready(ctx context.Context) error {
	conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", p.ChallengeManagementAddress)
	if err != nil {
		return err
	}
	conn.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.DirectoryURL(), nil)
	if err != nil {
		return err
	}
	res, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("directory answered %s", res.Status)
	}
	return nil
}

// Restart kills Pebble and starts it again on the same ports and directory URL: a CA that was
// reset and forgot every account, order and certificate (its roots are new too).
func (p *Pebble) Restart(ctx context.Context) error {
	for i, proc := range p.procs {
		if proc.name != "pebble" {
			continue
		}
		_ = proc.cmd.Process.Kill()
		<-proc.done
		p.procs = append(p.procs[:i], p.procs[i+1:]...)
		break
	}
	again := exec.Command(p.pebbleCmd.Path, p.pebbleCmd.Args[1:]...)
	again.Dir, again.Env = p.pebbleCmd.Dir, p.pebbleCmd.Env
	if err := p.start("pebble", again, p.startOutput); err != nil {
		return err
	}
	p.pebbleCmd = again
	return p.waitReady(ctx)
}

// Stop kills both processes, waits for them and removes the directory RunPebble created. It is
// safe to call more than once.
func (p *Pebble) Stop() {
	p.stopOnce.Do(func() {
		// Pebble keeps all state in memory: there is nothing to flush, so no need for SIGTERM.
		for _, proc := range p.procs {
			_ = proc.cmd.Process.Kill()
		}
		for _, proc := range p.procs {
			<-proc.done
		}
		if p.removeDir != "" {
			os.RemoveAll(p.removeDir)
		}
	})
}
