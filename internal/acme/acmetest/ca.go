package acmetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Options configure a CA. Now is required.
type Options struct {
	// Now is the CA's clock: certificates are valid from it, orders expire by it, faults and
	// renewal windows are placed on it.
	Now func() time.Time
	// Profiles maps the issuance profiles the directory advertises to the lifetime of their
	// certificates. Empty means one profile, "classic", of 90 days. An order that names no
	// profile gets the first profile in sorted order.
	Profiles map[string]time.Duration
	// RenewalWindow places the renewal window of a certificate valid from notBefore to notAfter.
	// Nil means DefaultRenewalWindow.
	RenewalWindow func(notBefore, notAfter time.Time) (start, end time.Time)
	// RenewalInfoRetryAfter is the Retry-After of renewalInfo answers; zero means 6 hours (what
	// Let's Encrypt sends).
	RenewalInfoRetryAfter time.Duration
	// Faults are the intervals of Now during which the CA fails every request.
	Faults []Fault
}

// FaultKind is how the CA fails a request.
type FaultKind int

const (
	// FaultRateLimited answers 429 with a rateLimited problem and the fault's RetryAfter.
	FaultRateLimited FaultKind = iota + 1
	// FaultServerError answers 500 with no problem document (a load balancer's error page).
	FaultServerError
	// FaultTimeout closes the connection without an answer: the request never reached the CA,
	// as when a request times out in front of it.
	FaultTimeout
)

func (k FaultKind) String() string {
	switch k {
	case FaultRateLimited:
		return "429"
	case FaultServerError:
		return "500"
	case FaultTimeout:
		return "timeout"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault makes the CA fail every request in [From, To) of its clock.
type Fault struct {
	From, To time.Time
	Kind     FaultKind
	// RetryAfter is sent with FaultRateLimited (whole seconds); zero means an hour.
	RetryAfter time.Duration
}

// DefaultRenewalWindow is the window Let's Encrypt's Boulder suggests: centred on the moment a
// third of the lifetime before notAfter, a day either side, narrowed to a twentieth of the
// lifetime either side for short certificates; whole seconds, as RFC 3339 on the wire.
func DefaultRenewalWindow(notBefore, notAfter time.Time) (time.Time, time.Time) {
	lifetime := notAfter.Sub(notBefore)
	ideal := notAfter.Add(-lifetime / 3)
	half := min(24*time.Hour, lifetime/20)
	return ideal.Add(-half).Truncate(time.Second), ideal.Add(half).Truncate(time.Second)
}

// Issued is one certificate the CA issued.
type Issued struct {
	Serial    *big.Int
	CertID    string
	DNSNames  []string
	NotBefore time.Time
	NotAfter  time.Time
	// Replaces is the CertID the order named in replaces, empty when it named none.
	Replaces string
	// OrderedAt is when (on the CA's clock) the order was created.
	OrderedAt time.Time
}

// Stats are the CA's counters.
type Stats struct {
	// Requests counts requests by endpoint: directory, newNonce, newAccount, account, newOrder,
	// order, authz, challenge, finalize, certificate, renewalInfo. Failed ones count too.
	Requests map[string]int
	// Faults counts the requests answered with a fault, by kind.
	Faults map[FaultKind]int
	// Orders and Certificates count the orders created and the certificates issued, by the
	// order's first DNS name.
	Orders, Certificates map[string]int
	// Replacing counts the orders created with replaces; AlreadyReplaced the orders refused
	// because the certificate they named had a replacement already.
	Replacing, AlreadyReplaced int
	// Connections counts the TCP connections clients opened (each a TLS handshake).
	Connections int
}

// CA is a running test CA. Stop it with Close.
type CA struct {
	opts   Options
	server *httptest.Server
	dns    *dns.Server
	key    *ecdsa.PrivateKey
	root   *x509.Certificate
	// rootPEM is the root certificate, which is also the issuer of every leaf.
	rootPEM []byte

	mu       sync.Mutex
	nextID   int
	accounts map[string]*account // by URL
	byKey    map[string]*account // by JWK thumbprint
	orders   map[string]*order   // by URL
	authzs   map[string]*authz   // by URL
	chals    map[string]*authz   // challenge URL to its authorization
	// pending holds the authorizations that may still be pending, by name, for the DNS server.
	pending  map[string]map[*authz]bool
	certs    map[string]*issued // by certificate URL
	byCertID map[string]*issued
	issued   []Issued
	stats    Stats
}

type account struct {
	url        string
	thumbprint string
	contact    []string
}

type order struct {
	url         string
	account     *account
	status      string
	names       []string
	profile     string
	replaces    string
	created     time.Time
	expires     time.Time
	authzs      []*authz
	certificate string
}

type authz struct {
	url     string
	name    string
	status  string
	expires time.Time
	token   string
	chalURL string
	account *account
}

type issued struct {
	der     []byte
	record  Issued
	account *account
	// replacedBy is the order that named this certificate in replaces.
	replacedBy *order
}

// Start starts a CA on 127.0.0.1: HTTPS for ACME (CABundle trusts it) and UDP DNS (DNSAddr).
func Start(opts Options) (*CA, error) {
	if opts.Now == nil {
		return nil, errors.New("acmetest: Options.Now is required")
	}
	if len(opts.Profiles) == 0 {
		opts.Profiles = map[string]time.Duration{"classic": 90 * 24 * time.Hour}
	}
	if opts.RenewalWindow == nil {
		opts.RenewalWindow = DefaultRenewalWindow
	}
	if opts.RenewalInfoRetryAfter == 0 {
		opts.RenewalInfoRetryAfter = 6 * time.Hour
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "acmetest root"},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          []byte("acmetest-root-key"),
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return nil, err
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{
		opts: opts, key: key, root: root,
		rootPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		accounts: map[string]*account{}, byKey: map[string]*account{},
		orders: map[string]*order{}, authzs: map[string]*authz{}, chals: map[string]*authz{}, pending: map[string]map[*authz]bool{},
		certs: map[string]*issued{}, byCertID: map[string]*issued{},
		stats: Stats{Requests: map[string]int{}, Faults: map[FaultKind]int{},
			Orders: map[string]int{}, Certificates: map[string]int{}},
	}
	ca.server = httptest.NewUnstartedServer(http.HandlerFunc(ca.serveHTTP))
	ca.server.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			ca.mu.Lock()
			ca.stats.Connections++
			ca.mu.Unlock()
		}
	}
	// Its HTTPS certificate is ECDSA, from the CA's root (httptest's own is RSA: every
	// connection a dropped request costs would cost an RSA signature).
	serving, err := ca.servingCertificate()
	if err != nil {
		return nil, err
	}
	ca.server.TLS = &tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS12}
	ca.server.StartTLS()
	if err := ca.startDNS(); err != nil {
		ca.server.Close()
		return nil, err
	}
	return ca, nil
}

// servingCertificate issues the HTTPS server's certificate for 127.0.0.1 from the root.
func (ca *CA) servingCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "acmetest"},
		NotBefore:    ca.root.NotBefore,
		NotAfter:     ca.root.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.root, key.Public(), ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Close stops the CA's servers.
func (ca *CA) Close() {
	ca.server.Close()
	_ = ca.dns.Shutdown()
}

// DirectoryURL is the ACME directory.
func (ca *CA) DirectoryURL() string { return ca.server.URL + "/directory" }

// CABundle is the PEM certificate that the CA's HTTPS certificate chains to (an Issuer's
// caBundle): its root.
func (ca *CA) CABundle() []byte { return ca.rootPEM }

// RootPEM is the certificate that issues every leaf.
func (ca *CA) RootPEM() []byte { return ca.rootPEM }

// DNSAddr is host:port of the DNS server that answers the pending dns-01 challenges.
func (ca *CA) DNSAddr() string { return ca.dns.PacketConn.LocalAddr().String() }

// SetFaults replaces the fault intervals.
func (ca *CA) SetFaults(faults []Fault) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.opts.Faults = faults
}

// Stats returns a copy of the counters.
func (ca *CA) Stats() Stats {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	s := Stats{Requests: map[string]int{}, Faults: map[FaultKind]int{}, Orders: map[string]int{}, Certificates: map[string]int{},
		Replacing: ca.stats.Replacing, AlreadyReplaced: ca.stats.AlreadyReplaced, Connections: ca.stats.Connections}
	for k, v := range ca.stats.Requests {
		s.Requests[k] = v
	}
	for k, v := range ca.stats.Faults {
		s.Faults[k] = v
	}
	for k, v := range ca.stats.Orders {
		s.Orders[k] = v
	}
	for k, v := range ca.stats.Certificates {
		s.Certificates[k] = v
	}
	return s
}

// Issued returns the certificates issued so far, in order of issuance.
func (ca *CA) Issued() []Issued {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return append([]Issued(nil), ca.issued...)
}

// TotalRequests sums Requests.
func (s Stats) TotalRequests() int {
	total := 0
	for _, n := range s.Requests {
		total += n
	}
	return total
}

// profileNames returns the profiles sorted by name.
func (ca *CA) profileNames() []string {
	names := make([]string, 0, len(ca.opts.Profiles))
	for name := range ca.opts.Profiles {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// issue signs a leaf for csr, valid from now for the profile's lifetime. Called with mu held.
func (ca *CA) issue(o *order, csr *x509.CertificateRequest, now time.Time) (*issued, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	notBefore := now.Truncate(time.Second)
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: o.names[0]},
		DNSNames:     o.names,
		NotBefore:    notBefore,
		// RFC 5280: notAfter is inclusive; a lifetime of L ends a second before notBefore + L.
		NotAfter:    notBefore.Add(ca.opts.Profiles[o.profile] - time.Second),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.root, csr.PublicKey, crypto.Signer(ca.key))
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	id := certID(leaf)
	cert := &issued{der: der, account: o.account, record: Issued{
		Serial: leaf.SerialNumber, CertID: id, DNSNames: append([]string(nil), o.names...),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Replaces: o.replaces, OrderedAt: o.created,
	}}
	ca.byCertID[id] = cert
	ca.issued = append(ca.issued, cert.record)
	ca.stats.Certificates[o.names[0]]++
	return cert, nil
}

func (ca *CA) newURL(kind string) string {
	ca.nextID++
	return fmt.Sprintf("%s/%s/%d", ca.server.URL, kind, ca.nextID)
}

// activeFault returns the fault in force at now, if any.
func (ca *CA) activeFault(now time.Time) (Fault, bool) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for _, f := range ca.opts.Faults {
		if !now.Before(f.From) && now.Before(f.To) {
			return f, true
		}
	}
	return Fault{}, false
}

func lowerAll(names []string) []string {
	out := make([]string, len(names))
	for i, name := range names {
		out[i] = strings.ToLower(name)
	}
	return out
}
