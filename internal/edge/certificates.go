package edge

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certpilot/certpilot/internal/pki"
)

// certificateIndex answers GetCertificate for one immutable set of certificates. A new index is
// built on every change and swapped in atomically, so a handshake never waits for a reload and
// an open connection keeps the certificate it was handed.
type certificateIndex struct {
	byName      map[string]*tls.Certificate
	defaultCert *tls.Certificate
	// count is the number of distinct leaves (the default included); earliestExpiry the
	// earliest NotAfter among them (zero when count is 0).
	count          int
	earliestExpiry time.Time
}

// ServedCertificate is a certificate and the names it is served for: Names when not nil (a
// subset of its leaf's DNS names and IP addresses, as CertificateSecretSource allows them), else
// every DNS name and IP address of its leaf.
type ServedCertificate struct {
	Certificate *tls.Certificate
	Names       []string
}

// newCertificateIndex indexes certificates by the names they are served for (DNS names, and IP
// addresses in canonical form). When several
// certificates name the same DNS name, one that is valid now wins over one that is not, then
// the one that expires last (a renewed certificate beside the old one it replaces), then the
// first. Certificates without a parsable leaf are skipped.
func newCertificateIndex(certificates []ServedCertificate, defaultCertificate *tls.Certificate, now time.Time) *certificateIndex {
	index := &certificateIndex{byName: map[string]*tls.Certificate{}, defaultCert: defaultCertificate}
	seen := map[string]bool{}
	count := func(leaf *x509.Certificate) {
		if seen[string(leaf.Raw)] {
			return
		}
		seen[string(leaf.Raw)] = true
		index.count++
		if index.earliestExpiry.IsZero() || leaf.NotAfter.Before(index.earliestExpiry) {
			index.earliestExpiry = leaf.NotAfter
		}
	}
	if defaultCertificate != nil {
		if leaf, err := leafOf(defaultCertificate); err == nil {
			count(leaf)
		}
	}
	for _, served := range certificates {
		certificate := served.Certificate
		leaf, err := leafOf(certificate)
		if err != nil {
			continue
		}
		count(leaf)
		names := served.Names
		if names == nil {
			names = pki.LeafNames(leaf)
		}
		for _, name := range names {
			name = normalizeName(name)
			if current, taken := index.byName[name]; !taken || better(leaf, current.Leaf, now) {
				index.byName[name] = certificate
			}
		}
	}
	return index
}

// better reports whether candidate should be served instead of current for a name they share.
func better(candidate, current *x509.Certificate, now time.Time) bool {
	candidateValid := !now.Before(candidate.NotBefore) && now.Before(candidate.NotAfter)
	currentValid := !now.Before(current.NotBefore) && now.Before(current.NotAfter)
	if candidateValid != currentValid {
		return candidateValid
	}
	return candidate.NotAfter.After(current.NotAfter)
}

// lookupHello returns the certificate for a ClientHello: by its server name (lookup), or, when
// it sends none, as clients do when they connect to an IP address (RFC 6066 allows no IP
// address in SNI), by the local IP address the connection arrived at.
func (index *certificateIndex) lookupHello(hello *tls.ClientHelloInfo) *tls.Certificate {
	if hello.ServerName == "" && hello.Conn != nil {
		if local, ok := hello.Conn.LocalAddr().(*net.TCPAddr); ok {
			if addr, ok := netip.AddrFromSlice(local.IP); ok {
				if certificate, ok := index.byName[addr.Unmap().String()]; ok {
					return certificate
				}
			}
		}
	}
	return index.lookup(hello.ServerName)
}

// lookup returns the certificate for serverName: the certificate naming it exactly (an IP
// address in any form), else one whose wildcard covers it, else the default (also for a
// ClientHello without SNI), else nil.
func (index *certificateIndex) lookup(serverName string) *tls.Certificate {
	name := normalizeName(serverName)
	if name != "" {
		if certificate, ok := index.byName[name]; ok {
			return certificate
		}
		// A wildcard covers exactly one label: *.example.com covers a.example.com, not
		// example.com nor a.b.example.com.
		if _, parent, ok := strings.Cut(name, "."); ok && parent != "" {
			if certificate, ok := index.byName["*."+parent]; ok {
				return certificate
			}
		}
	}
	return index.defaultCert
}

// StaticCertificates is a CertificateSource that serves a fixed set of certificates by SNI: the
// certificate naming the server name exactly wins over one whose wildcard covers it, and the
// default (if any) answers every other name, including a ClientHello without SNI.
type StaticCertificates struct {
	index *certificateIndex
}

var _ CertificateSource = (*StaticCertificates)(nil)

// NewStaticCertificates indexes certificates by the DNS names of their leaves (see
// CertificateStore for which wins when two name the same DNS name). defaultCertificate may be
// nil: unknown names then fail the handshake.
func NewStaticCertificates(certificates []*tls.Certificate, defaultCertificate *tls.Certificate) (*StaticCertificates, error) {
	if defaultCertificate != nil {
		if _, err := leafOf(defaultCertificate); err != nil {
			return nil, fmt.Errorf("default certificate: %w", err)
		}
	}
	for i, certificate := range certificates {
		if _, err := leafOf(certificate); err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
	}
	return &StaticCertificates{index: newCertificateIndex(allNames(certificates), defaultCertificate, time.Now())}, nil
}

// GetCertificate implements CertificateSource.
func (s *StaticCertificates) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if certificate := s.index.lookupHello(hello); certificate != nil {
		return certificate, nil
	}
	return nil, fmt.Errorf("certpilot edge: no certificate for server name %q", hello.ServerName)
}

// CertificateStore is the CertificateSource of the running edge: it serves by SNI the union of
// the certificates that several sources (the certificate Secrets, mounted directories, the
// SSL_CERTS variable) give it, plus a default certificate. Each source replaces its own set;
// every change builds a new index that handshakes pick up at once, without a restart and
// without touching open connections. It is safe for concurrent use.
type CertificateStore struct {
	mu          sync.Mutex
	sets        map[string][]ServedCertificate
	defaultCert *tls.Certificate
	// pending names the sources registered with Expect that have not delivered yet.
	pending map[string]bool
	index   atomic.Pointer[certificateIndex]
	// onChange, when set, is told the new count and earliest expiry after every change.
	onChange func(count int, earliestExpiry time.Time)
}

var _ CertificateSource = (*CertificateStore)(nil)

// NewCertificateStore returns an empty store.
func NewCertificateStore() *CertificateStore {
	s := &CertificateStore{sets: map[string][]ServedCertificate{}, pending: map[string]bool{}}
	s.index.Store(newCertificateIndex(nil, nil, time.Now()))
	return s
}

// OnChange sets a function called with the certificate count and the earliest expiry after
// every change (for metrics). Set it before the sources start.
func (s *CertificateStore) OnChange(onChange func(count int, earliestExpiry time.Time)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onChange = onChange
	s.rebuildLocked()
}

// Expect registers a source that will call Replace; Synced is false until it has.
func (s *CertificateStore) Expect(source string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, delivered := s.sets[source]; !delivered {
		s.pending[source] = true
	}
}

// Replace makes certificates the whole set of source, each served for every DNS name of its
// leaf. Certificates without a parsable leaf are skipped.
func (s *CertificateStore) Replace(source string, certificates []*tls.Certificate) {
	s.ReplaceServed(source, allNames(certificates))
}

// ReplaceServed makes certificates the whole set of source, each served for its Names.
func (s *CertificateStore) ReplaceServed(source string, certificates []ServedCertificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets[source] = slices.Clone(certificates)
	delete(s.pending, source)
	s.rebuildLocked()
}

// allNames serves each of certificates for every DNS name of its leaf.
func allNames(certificates []*tls.Certificate) []ServedCertificate {
	served := make([]ServedCertificate, len(certificates))
	for i, certificate := range certificates {
		served[i] = ServedCertificate{Certificate: certificate}
	}
	return served
}

// SetDefault sets the certificate served to names no other certificate covers (nil: none, the
// handshake fails).
func (s *CertificateStore) SetDefault(certificate *tls.Certificate) error {
	if certificate != nil {
		if _, err := leafOf(certificate); err != nil {
			return fmt.Errorf("default certificate: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaultCert = certificate
	s.rebuildLocked()
	return nil
}

func (s *CertificateStore) rebuildLocked() {
	var all []ServedCertificate
	for _, source := range slices.Sorted(maps.Keys(s.sets)) {
		all = append(all, s.sets[source]...)
	}
	index := newCertificateIndex(all, s.defaultCert, time.Now())
	s.index.Store(index)
	if s.onChange != nil {
		s.onChange(index.count, index.earliestExpiry)
	}
}

// Synced reports whether every source registered with Expect has delivered its first set.
func (s *CertificateStore) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) == 0
}

// Stats returns how many distinct certificates the store serves and the earliest expiry among
// them (zero when there are none).
func (s *CertificateStore) Stats() (count int, earliestExpiry time.Time) {
	index := s.index.Load()
	return index.count, index.earliestExpiry
}

// GetCertificate implements CertificateSource.
func (s *CertificateStore) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if certificate := s.index.Load().lookupHello(hello); certificate != nil {
		return certificate, nil
	}
	return nil, fmt.Errorf("certpilot edge: no certificate for server name %q", hello.ServerName)
}

// leafOf returns the parsed leaf of certificate, parsing and caching it when tls.X509KeyPair did
// not (older GODEBUG settings) or the certificate was built by hand.
func leafOf(certificate *tls.Certificate) (*x509.Certificate, error) {
	if certificate.Leaf != nil {
		return certificate.Leaf, nil
	}
	if len(certificate.Certificate) == 0 {
		return nil, errors.New("no certificate data")
	}
	leaf, err := x509.ParseCertificate(certificate.Certificate[0])
	if err != nil {
		return nil, err
	}
	certificate.Leaf = leaf
	return leaf, nil
}

// sameCertificates reports whether a and b hold the same leaves in the same order, so that a
// source can skip an update that changes nothing.
func sameCertificates(a, b []*tls.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *tls.Certificate) bool {
		return x.Leaf != nil && y.Leaf != nil && bytes.Equal(x.Leaf.Raw, y.Leaf.Raw)
	})
}
