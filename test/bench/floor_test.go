package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/acme"

	"github.com/certpilot/certpilot/internal/testenv"
)

// floorResult is what the bare ACME client achieved.
type floorResult struct {
	Latency latencies
	// CPU is the benchmark process's CPU time while the floor ran (client and responder).
	CPU time.Duration
	// Processes is the CPU time of every process while it ran, by name (processCPU).
	Processes map[string]time.Duration
	// Retries counts certificates started over after an error (a timeout on a busy machine).
	Retries int
}

// floorAttempts is how often the floor tries one certificate: a bare client on a loaded
// machine sees the odd timeout, and one of them must not void the run.
const floorAttempts = 3

// runFloor issues cfg.N certificates with a bare golang.org/x/crypto/acme client against
// pebble, cfg.Concurrency at a time, presenting each challenge the way the manager's run does:
// tls-alpn-01 from a small responder of its own on Pebble's TLS port, dns-01 by RFC 2136
// updates to bind. It is the floor: ACME and the CA's cost with nothing of Kubernetes. With
// kube, each certificate also goes through the apiserver as kubeFloor describes (the
// Kubernetes floor).
func runFloor(ctx context.Context, cfg config, pebble *testenv.Pebble, bind *testenv.BIND, names func(i int) []string, kube *kubeFloor) (floorResult, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pebble.CABundle) {
		return floorResult{}, errors.New("Pebble's CA bundle holds no certificate")
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool}
	// A bare client at its best keeps its connections: as many idle ones as workers.
	transport.MaxIdleConnsPerHost = cfg.Concurrency
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return floorResult{}, err
	}
	client := &acme.Client{
		Key: accountKey, DirectoryURL: pebble.DirectoryURL(), UserAgent: "certpilot-bench-floor",
		HTTPClient: &http.Client{Transport: transport, Timeout: 2 * time.Minute},
	}
	if _, err := client.Register(ctx, &acme.Account{Contact: []string{"mailto:floor@example.com"}}, acme.AcceptTOS); err != nil {
		return floorResult{}, fmt.Errorf("registering the floor's account: %w", err)
	}

	var present presenter
	switch cfg.Solver {
	case solverTLSALPN01:
		responder, err := startALPNResponder(fmt.Sprintf("127.0.0.1:%d", pebble.TLSPort))
		if err != nil {
			return floorResult{}, err
		}
		defer responder.Close()
		present = responder
	case solverDNS01:
		present = &rfc2136Presenter{bind: bind}
	}

	cpuBefore, processesBefore := selfCPU(), processCPU()
	start := time.Now()
	jobs := make(chan int)
	var (
		mu       sync.Mutex
		starts   = map[string]time.Time{}
		finishes = map[string]time.Time{}
		firstErr error
		retries  int
	)
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			for i := range jobs {
				err := issueThrough(ctx, kube, i, names(i), func() ([][]byte, crypto.Signer, error) {
					chain, key, err := issueOne(ctx, client, present, cfg, names(i))
					for attempt := 2; err != nil && ctx.Err() == nil && attempt <= floorAttempts; attempt++ {
						mu.Lock()
						retries++
						mu.Unlock()
						progress("floor: certificate %d, attempt %d: %v", i, attempt, err)
						chain, key, err = issueOne(ctx, client, present, cfg, names(i))
					}
					return chain, key, err
				})
				mu.Lock()
				key := fmt.Sprint(i)
				starts[key] = start
				if err == nil {
					finishes[key] = time.Now()
				} else if firstErr == nil {
					firstErr = fmt.Errorf("floor certificate %d (%v): %w", i, names(i), err)
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	for i := range cfg.N {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	result := floorResult{Latency: summarize(starts, finishes), CPU: selfCPU() - cpuBefore, Retries: retries,
		Processes: cpuSince(processesBefore, processCPU())}
	if firstErr != nil {
		return result, firstErr
	}
	if result.Latency.Count != cfg.N {
		return result, fmt.Errorf("floor issued %d of %d certificates: %w", result.Latency.Count, cfg.N, ctx.Err())
	}
	return result, nil
}

// issueThrough runs issue for certificate i, between creating its Certificate and storing its
// Secret and Ready status when kube is set.
func issueThrough(ctx context.Context, kube *kubeFloor, i int, names []string, issue func() ([][]byte, crypto.Signer, error)) error {
	if kube == nil {
		_, _, err := issue()
		return err
	}
	cert, err := kube.begin(ctx, i, names)
	if err != nil {
		return err
	}
	chain, key, err := issue()
	if err != nil {
		return err
	}
	return kube.finish(ctx, cert, chain, key)
}

// issueOne is one certificate the way RFC 8555 and x/crypto's documentation describe it: order,
// present and accept every challenge, wait, finalize with a fresh key, download, clean up. It
// returns the chain (DER, leaf first) and the key.
func issueOne(ctx context.Context, client *acme.Client, present presenter, cfg config, names []string) (chain [][]byte, key crypto.Signer, err error) {
	order, err := client.AuthorizeOrder(ctx, acme.DomainIDs(names...))
	if err != nil {
		return nil, nil, fmt.Errorf("new order: %w", err)
	}
	challengeType := cfg.Solver
	var cleanups []func()
	defer func() {
		for _, cleanup := range cleanups {
			cleanup()
		}
	}()
	for _, url := range order.AuthzURLs {
		authz, err := client.GetAuthorization(ctx, url)
		if err != nil {
			return nil, nil, err
		}
		if authz.Status == acme.StatusValid {
			continue
		}
		var challenge *acme.Challenge
		for _, c := range authz.Challenges {
			if c.Type == challengeType {
				challenge = c
			}
		}
		if challenge == nil {
			return nil, nil, fmt.Errorf("authorization %s offers no %s challenge", url, challengeType)
		}
		cleanup, err := present.Present(ctx, client, authz.Identifier.Value, challenge.Token)
		if err != nil {
			return nil, nil, fmt.Errorf("presenting %s for %s: %w", challengeType, authz.Identifier.Value, err)
		}
		cleanups = append(cleanups, cleanup)
		if _, err := client.Accept(ctx, challenge); err != nil {
			return nil, nil, fmt.Errorf("accepting the challenge: %w", err)
		}
	}
	// Wait on the order, not on each authorization: it turns ready when they are valid. Pebble answers finalize with "processing" and no Location header:
	// CreateCertFromOrder knows the order's URL, CreateOrderCert would not (DESIGN.md, known
	// facts).
	order, err = client.WaitOrder(ctx, order.URI)
	if err != nil {
		return nil, nil, err
	}
	key, err = newKey(cfg.Key)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
	}, key)
	if err != nil {
		return nil, nil, err
	}
	chain, _, err = client.CreateCertFromOrder(ctx, order, csr, true)
	if err != nil {
		return nil, nil, fmt.Errorf("finalizing: %w", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, nil, err
	}
	if len(leaf.DNSNames) != len(names) {
		return nil, nil, fmt.Errorf("issued for %v, want %v", leaf.DNSNames, names)
	}
	return chain, key, nil
}

func newKey(keyType string) (crypto.Signer, error) {
	if keyType == keyRSA2048 {
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// presenter publishes a challenge response and returns what removes it.
type presenter interface {
	Present(ctx context.Context, client *acme.Client, domain, token string) (cleanup func(), err error)
}

// alpnResponder answers tls-alpn-01 handshakes from an in-memory map: the floor's edge.
type alpnResponder struct {
	listener net.Listener
	certs    sync.Map // domain -> *tls.Certificate
	wg       sync.WaitGroup
}

func startALPNResponder(address string) (*alpnResponder, error) {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("the floor's tls-alpn-01 responder: %w", err)
	}
	r := &alpnResponder{listener: listener}
	config := &tls.Config{
		NextProtos: []string{acme.ALPNProto},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert, ok := r.certs.Load(hello.ServerName); ok {
				return cert.(*tls.Certificate), nil
			}
			return nil, fmt.Errorf("no challenge for %q", hello.ServerName)
		},
	}
	r.wg.Go(func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			r.wg.Go(func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				_ = tls.Server(conn, config).Handshake()
			})
		}
	})
	return r, nil
}

func (r *alpnResponder) Present(_ context.Context, client *acme.Client, domain, token string) (func(), error) {
	cert, err := client.TLSALPN01ChallengeCert(token, domain)
	if err != nil {
		return nil, err
	}
	r.certs.Store(domain, &cert)
	return func() { r.certs.Delete(domain) }, nil
}

// Close stops accepting and waits for the handshakes in flight.
func (r *alpnResponder) Close() {
	r.listener.Close()
	r.wg.Wait()
}

// rfc2136Presenter adds and removes dns-01 TXT records on BIND with TSIG-signed updates.
type rfc2136Presenter struct{ bind *testenv.BIND }

func (p *rfc2136Presenter) Present(ctx context.Context, client *acme.Client, domain, token string) (func(), error) {
	value, err := client.DNS01ChallengeRecord(token)
	if err != nil {
		return nil, err
	}
	name := "_acme-challenge." + dns.Fqdn(domain)
	record, err := dns.NewRR(fmt.Sprintf("%s 60 IN TXT %q", name, value))
	if err != nil {
		return nil, err
	}
	if err := p.update(func(m *dns.Msg) { m.Insert([]dns.RR{record}) }); err != nil {
		return nil, err
	}
	return func() { _ = p.update(func(m *dns.Msg) { m.Remove([]dns.RR{record}) }) }, nil
}

func (p *rfc2136Presenter) update(change func(*dns.Msg)) error {
	message := new(dns.Msg)
	message.SetUpdate(p.bind.Zone)
	change(message)
	message.SetTsig(p.bind.TSIGKeyName, dns.HmacSHA256, 300, time.Now().Unix())
	client := &dns.Client{Net: "tcp", Timeout: 10 * time.Second, TsigSecret: map[string]string{p.bind.TSIGKeyName: p.bind.TSIGSecret}}
	reply, _, err := client.Exchange(message, p.bind.Address)
	if err != nil {
		return err
	}
	if reply.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("RFC 2136 update answered %s", dns.RcodeToString[reply.Rcode])
	}
	return nil
}

// selfCPU is this process's user and system CPU time so far.
func selfCPU() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
