package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	// Pebble's own default is 50; the harness's is 0 so that every order has fresh challenges.
	AuthzReusePercent int
	// AlwaysValid sets PEBBLE_VA_ALWAYS_VALID: every challenge validates without being checked.
	AlwaysValid bool

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
	// which a proxy in front of it serves too (StartGuardedProxy).
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

	if err := p.choosePorts(); err != nil {
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
	chall := exec.Command(challBinary,
		"-defaultIPv4", "127.0.0.1",
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

// choosePorts picks free loopback ports for everything the options leave open. The ports are
// free when chosen, not reserved: another process could take one before Pebble binds it, which
// then shows as a start failure.
func (p *Pebble) choosePorts() error {
	// Hold every chosen port open until all are chosen, so that no two are the same.
	var ports []int
	for range 5 {
		listener, err := net.Listen("tcp", "127.0.0.1:0")
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

// writeServingCertificate creates a throwaway CA and, signed by it, the certificate Pebble serves
// its directory and management interface with (127.0.0.1, ::1, localhost). Generating it keeps
// the harness independent of the test certificates inside Pebble's module.
func (p *Pebble) writeServingCertificate(dir string) (certFile, keyFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "certpilot test Pebble HTTPS CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		return "", "", fmt.Errorf("creating Pebble's HTTPS CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, key.Public(), caKey)
	if err != nil {
		return "", "", fmt.Errorf("creating Pebble's HTTPS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile = filepath.Join(dir, "pebble-https.pem")
	keyFile = filepath.Join(dir, "pebble-https.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}

	p.CABundle = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool}
	p.client = &http.Client{Transport: transport, Timeout: 10 * time.Second}
	return certFile, keyFile, nil
}

// pebbleConfig is Pebble's JSON configuration file, limited to what the harness sets.
type pebbleConfig struct {
	Pebble struct {
		ListenAddress                  string                       `json:"listenAddress"`
		ManagementListenAddress        string                       `json:"managementListenAddress"`
		Certificate                    string                       `json:"certificate"`
		PrivateKey                     string                       `json:"privateKey"`
		HTTPPort                       int                          `json:"httpPort"`
		TLSPort                        int                          `json:"tlsPort"`
		ExternalAccountBindingRequired bool                         `json:"externalAccountBindingRequired"`
		ExternalAccountMACKeys         map[string]string            `json:"externalAccountMACKeys,omitempty"`
		Profiles                       map[string]pebbleProfileJSON `json:"profiles"`
		RetryAfter                     struct {
			Authz int `json:"authz"`
			Order int `json:"order"`
		} `json:"retryAfter"`
	} `json:"pebble"`
}

type pebbleProfileJSON struct {
	Description    string `json:"description"`
	ValidityPeriod uint64 `json:"validityPeriod"` // seconds
}

func writePebbleConfig(path string, p *Pebble, opts PebbleOptions, certFile, keyFile string) error {
	var config pebbleConfig
	c := &config.Pebble
	c.ListenAddress = p.ListenAddress
	c.ManagementListenAddress = p.ManagementAddress
	c.Certificate = certFile
	c.PrivateKey = keyFile
	c.HTTPPort = p.HTTPPort
	c.TLSPort = p.TLSPort
	c.ExternalAccountBindingRequired = opts.ExternalAccountBindingRequired
	c.ExternalAccountMACKeys = opts.ExternalAccountMACKeys
	c.Profiles = map[string]pebbleProfileJSON{
		"default": {Description: "The default profile", ValidityPeriod: seconds(opts.DefaultValidity)},
	}
	for name, profile := range opts.Profiles {
		c.Profiles[name] = pebbleProfileJSON{Description: profile.Description, ValidityPeriod: seconds(profile.ValidityPeriod)}
	}
	// One second, Pebble's smallest, keeps polling clients fast.
	c.RetryAfter.Authz = 1
	c.RetryAfter.Order = 1
	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(d.Round(time.Second) / time.Second)
}

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

// Output returns what both processes have written so far, each line prefixed with its name.
func (p *Pebble) Output() string { return p.output.String() }

// OrderCount returns how many orders Pebble has created so far (from its log).
func (p *Pebble) OrderCount() int {
	return strings.Count(p.output.String(), "Added order ")
}

// IssuedCount returns how many certificates Pebble has issued so far (from its log; across
// Restart, which keeps the log).
func (p *Pebble) IssuedCount() int {
	return strings.Count(p.output.String(), "Issued certificate serial ")
}

// Pause stops Pebble with SIGSTOP: it keeps its state, and its listeners accept connections
// that are never answered, as a CA that hangs. Resume continues it.
func (p *Pebble) Pause() error { return p.signalPebble(syscall.SIGSTOP) }

// Resume continues a paused Pebble (SIGCONT).
func (p *Pebble) Resume() error { return p.signalPebble(syscall.SIGCONT) }

func (p *Pebble) signalPebble(signal syscall.Signal) error {
	for _, proc := range p.procs {
		if proc.name == "pebble" {
			return proc.cmd.Process.Signal(signal)
		}
	}
	return fmt.Errorf("pebble is not running")
}

// ValidationAttempts returns how many times Pebble's validation authority has tried to validate
// a challenge for dnsName so far (from its log).
func (p *Pebble) ValidationAttempts(dnsName string) int {
	return strings.Count(p.output.String(), `Value:"`+dnsName+`"}, Challenge:`)
}

// DirectoryURL is the ACME directory URL.
func (p *Pebble) DirectoryURL() string { return "https://" + p.ListenAddress + "/dir" }

// HTTPClient returns an HTTP client that trusts CABundle, for Pebble's management interface.
func (p *Pebble) HTTPClient() *http.Client { return p.client }

// SetTXT adds a TXT record value for name (a trailing dot is optional) to challtestsrv's DNS.
// Values accumulate: setting two values for one name answers both, as a wildcard and its base
// domain need for dns-01.
func (p *Pebble) SetTXT(name, value string) error {
	return p.challengeManagement("/set-txt", map[string]string{"host": name, "value": value})
}

// ClearTXT removes every TXT record value of name.
func (p *Pebble) ClearTXT(name string) error {
	return p.challengeManagement("/clear-txt", map[string]string{"host": name})
}

// AddA makes challtestsrv's DNS answer A queries for host with ip instead of its default
// 127.0.0.1.
func (p *Pebble) AddA(host, ip string) error {
	return p.challengeManagement("/add-a", map[string]any{"host": host, "addresses": []string{ip}})
}

func (p *Pebble) challengeManagement(path string, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	url := "http://" + p.ChallengeManagementAddress + path
	res, err := p.client.Post(url, "application/json", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("challtestsrv %s: %w", path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		detail, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return fmt.Errorf("challtestsrv %s answered %s: %s", path, res.Status, bytes.TrimSpace(detail))
	}
	return nil
}

// Roots returns the PEM root certificate that signs issued certificates' chains. Pebble makes a
// new one at every start.
func (p *Pebble) Roots() ([]byte, error) { return p.managementGet("/roots/0") }

// Intermediates returns the PEM intermediate certificate that signs issued certificates.
func (p *Pebble) Intermediates() ([]byte, error) { return p.managementGet("/intermediates/0") }

func (p *Pebble) managementGet(path string) ([]byte, error) {
	res, err := p.client.Get("https://" + p.ManagementAddress + path)
	if err != nil {
		return nil, fmt.Errorf("Pebble management %s: %w", path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("Pebble management %s: %w", path, err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("Pebble management %s answered %s: %s", path, res.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// SetRenewalInfo makes Pebble's renewalInfo endpoint answer ariResponse (any JSON, valid or not)
// for the certificate certPEM, to drive ACME Renewal Information windows in tests.
func (p *Pebble) SetRenewalInfo(certPEM []byte, ariResponse string) error {
	data, err := json.Marshal(map[string]string{"certificate": string(certPEM), "ariResponse": ariResponse})
	if err != nil {
		return err
	}
	res, err := p.client.Post("https://"+p.ManagementAddress+"/set-renewal-info/", "application/json", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("Pebble management /set-renewal-info/: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		detail, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return fmt.Errorf("Pebble management /set-renewal-info/ answered %s: %s", res.Status, bytes.TrimSpace(detail))
	}
	return nil
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
