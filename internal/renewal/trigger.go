package renewal

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/certpilot/certpilot/internal/pki"
)

// Key algorithms, spelled as in the Certificate API's privateKey.algorithm.
const (
	KeyAlgorithmECDSA = pki.ECDSA
	KeyAlgorithmRSA   = pki.RSA
)

// defaultIssuerKind is what the API defaults issuerRef.kind to.
const defaultIssuerKind = "Issuer"

// Reasons a certificate is issued, CamelCase for condition reasons and Events.
const (
	ReasonSecretMissing       = "SecretMissing"
	ReasonSecretEmpty         = "SecretEmpty"
	ReasonInvalidCertificate  = "InvalidCertificate"
	ReasonInvalidPrivateKey   = "InvalidPrivateKey"
	ReasonKeyMismatch         = "KeyMismatch"
	ReasonDNSNamesChanged     = "DNSNamesChanged"
	ReasonKeyAlgorithmChanged = "KeyAlgorithmChanged"
	ReasonKeySizeChanged      = "KeySizeChanged"
	ReasonIssuerChanged       = "IssuerChanged"
	ReasonIssuerServerChanged = "IssuerServerChanged"
	ReasonExpired             = "Expired"
	ReasonRenewalDue          = "RenewalDue"
	ReasonRenewalRequested    = "RenewalRequested"
)

// Input is what the issuance decision depends on: the Certificate's spec, the state of its
// Secret and the current time.
type Input struct {
	// Now is the current time, injected so tests control the clock.
	Now time.Time
	// DNSNames are the spec's names, DNS names then IP addresses; the first DNS name is the
	// subject.
	DNSNames []string
	// KeyAlgorithm is "ECDSA" or "RSA"; empty means ECDSA, the API default.
	KeyAlgorithm string
	// KeySize in bits; 0 means DefaultKeySize(KeyAlgorithm).
	KeySize int
	// IssuerKind ("Issuer" when empty, the API default) and IssuerName name the spec's issuer.
	IssuerKind, IssuerName string
	// IssuerServer is the ACME directory URL the issuer points to now (its spec.server). Empty
	// means unknown (the issuer could not be read): the check is skipped.
	IssuerServer string
	// RenewBefore is the spec's renewBefore; see RenewalTime.
	RenewBefore time.Duration
	// RenewalTime, when set, replaces the RenewalTime computed from the certificate: it is
	// where the controller passes the time it chose inside the CA's ARI window, which wins
	// over renewBefore.
	RenewalTime time.Time
	// RenewalRequested is true when the renew annotation holds a value not yet acted on.
	RenewalRequested bool
	// Secret is the certificate's Secret, nil when it does not exist.
	Secret *Secret
}

// Secret is the part of a certificate's Secret the decision reads.
type Secret struct {
	// CertificatePEM is tls.crt: the leaf, then the chain.
	CertificatePEM []byte
	// PrivateKeyPEM is tls.key.
	PrivateKeyPEM []byte
	// IssuerKind and IssuerName are recorded on the Secret by certpilot when it wrote it.
	IssuerKind, IssuerName string
	// IssuerServer is the ACME directory URL the certificate was issued by, recorded on the
	// Secret by certpilot when it wrote it. Empty (a Secret written before certpilot recorded
	// it) never triggers a reissue, so an upgrade does not reissue every certificate.
	IssuerServer string
	// IssuerAccount is the ACME account URL the certificate was issued to, recorded beside
	// IssuerServer. It triggers nothing (a new account at the same CA does not make the
	// certificate any less valid); CanReplace reads it.
	IssuerAccount string
}

// Trigger says why a certificate must be issued.
type Trigger struct {
	// Reason is CamelCase, for condition reasons and Events: one of the Reason constants.
	Reason string
	// Message is a human sentence naming what differs.
	Message string
}

// DefaultKeySize returns the key size used when the spec sets none: 256 (P-256) for ECDSA or an
// empty algorithm, 2048 for RSA, and 0 for an algorithm certpilot does not know.
func DefaultKeySize(algorithm string) int {
	switch algorithm {
	case KeyAlgorithmECDSA, "":
		return 256
	case KeyAlgorithmRSA:
		return 2048
	default:
		return 0
	}
}

// ShouldIssue reports whether a certificate must be issued now, and why. The checks run in
// order and the first that fires wins, so the reason names the most fundamental problem: a
// Secret whose key cannot be parsed reports InvalidPrivateKey, not RenewalDue. When no check
// fires the Secret is good until its renewal time and ShouldIssue returns (Trigger{}, false).
func ShouldIssue(in Input) (Trigger, bool) {
	s := parse(in)
	for _, check := range checks {
		if trigger, fire := check(s); fire {
			return trigger, true
		}
	}
	return Trigger{}, false
}

// state is the Input with its Secret parsed once, so that the checks do not each parse the PEM
// again (parsing a large RSA key alone takes milliseconds, and a controller runs the decision
// for every certificate it reconciles). Each check may rely on the checks before it having
// passed: after invalidCertificate, leaf is set; after invalidPrivateKey, key is set.
type state struct {
	Input
	leaf    *x509.Certificate
	leafErr error
	key     crypto.Signer
	keyErr  error
}

func parse(in Input) *state {
	s := &state{Input: in}
	if in.Secret == nil {
		return s
	}
	s.leaf, s.leafErr = pki.ParseLeaf(in.Secret.CertificatePEM)
	s.key, s.keyErr = pki.DecodePrivateKey(in.Secret.PrivateKeyPEM)
	return s
}

// check is one item of the checklist: it fires with the reason to issue, or passes.
type check func(*state) (Trigger, bool)

// checks is the checklist, most fundamental first.
var checks = []check{
	secretMissing,
	secretEmpty,
	invalidCertificate,
	invalidPrivateKey,
	keyMismatch,
	dnsNamesChanged,
	keyAlgorithmChanged,
	keySizeChanged,
	issuerChanged,
	issuerServerChanged,
	expired,
	renewalDue,
	renewalRequested,
}

func secretMissing(s *state) (Trigger, bool) {
	if s.Secret != nil {
		return Trigger{}, false
	}
	return Trigger{ReasonSecretMissing, "The Secret does not exist."}, true
}

func secretEmpty(s *state) (Trigger, bool) {
	if len(s.Secret.CertificatePEM) > 0 || len(s.Secret.PrivateKeyPEM) > 0 {
		return Trigger{}, false
	}
	return Trigger{ReasonSecretEmpty, "The Secret holds neither a certificate (tls.crt) nor a private key (tls.key)."}, true
}

func invalidCertificate(s *state) (Trigger, bool) {
	switch {
	case len(s.Secret.CertificatePEM) == 0:
		return Trigger{ReasonInvalidCertificate, "The Secret holds no certificate (tls.crt is empty)."}, true
	case s.leafErr != nil:
		return Trigger{ReasonInvalidCertificate, fmt.Sprintf("The Secret's certificate (tls.crt) cannot be parsed: %v.", s.leafErr)}, true
	}
	return Trigger{}, false
}

func invalidPrivateKey(s *state) (Trigger, bool) {
	switch {
	case len(s.Secret.PrivateKeyPEM) == 0:
		return Trigger{ReasonInvalidPrivateKey, "The Secret holds no private key (tls.key is empty)."}, true
	case s.keyErr != nil:
		return Trigger{ReasonInvalidPrivateKey, fmt.Sprintf("The Secret's private key (tls.key) cannot be parsed: %v.", s.keyErr)}, true
	}
	return Trigger{}, false
}

func keyMismatch(s *state) (Trigger, bool) {
	if pki.KeyMatches(s.leaf, s.key) {
		return Trigger{}, false
	}
	return Trigger{ReasonKeyMismatch, "The Secret's private key (tls.key) does not belong to its certificate (tls.crt)."}, true
}

func dnsNamesChanged(s *state) (Trigger, bool) {
	leafNames := pki.LeafNames(s.leaf)
	want, have := nameSet(s.DNSNames), nameSet(leafNames)
	missing, extra := difference(want, have), difference(have, want)
	if len(missing) > 0 || len(extra) > 0 {
		var diffs []string
		if len(missing) > 0 {
			diffs = append(diffs, "lacks "+strings.Join(missing, ", "))
		}
		if len(extra) > 0 {
			diffs = append(diffs, "has extra "+strings.Join(extra, ", "))
		}
		return Trigger{ReasonDNSNamesChanged, fmt.Sprintf(
			"The certificate's names %v differ from the spec's %v: it %s.",
			leafNames, s.DNSNames, strings.Join(diffs, " and "))}, true
	}
	// An empty CommonName is accepted: Let's Encrypt's tlsserver and shortlived profiles omit
	// it, and no CA can set it for a name over 64 characters. Demanding it would reissue such
	// certificates forever.
	// The subject is compared with the first DNS name only: no CA puts an IP address there.
	commonName := s.leaf.Subject.CommonName
	firstDNSName := ""
	if i := slices.IndexFunc(s.DNSNames, func(name string) bool { _, ip := pki.ParseIP(name); return !ip }); i >= 0 {
		firstDNSName = s.DNSNames[i]
	}
	if firstDNSName != "" && commonName != "" && normalizeName(commonName) != normalizeName(firstDNSName) {
		return Trigger{ReasonDNSNamesChanged, fmt.Sprintf(
			"The certificate's subject is %s, the spec's first DNS name is %s.",
			commonName, firstDNSName)}, true
	}
	return Trigger{}, false
}

func keyAlgorithmChanged(s *state) (Trigger, bool) {
	algorithm, _, err := pki.PublicKeyAlgorithm(s.leaf.PublicKey)
	if err == nil && algorithm == s.wantAlgorithm() {
		return Trigger{}, false
	}
	have := algorithm
	if err != nil {
		have = fmt.Sprintf("%T", s.leaf.PublicKey)
	}
	return Trigger{ReasonKeyAlgorithmChanged, fmt.Sprintf(
		"The certificate's key is %s, the spec asks for %s.", have, s.wantAlgorithm())}, true
}

func keySizeChanged(s *state) (Trigger, bool) {
	// keyAlgorithmChanged has passed, so the algorithm is known and matches the spec.
	algorithm, size, _ := pki.PublicKeyAlgorithm(s.leaf.PublicKey)
	want := s.KeySize
	if want == 0 {
		want = DefaultKeySize(algorithm)
	}
	if size == want {
		return Trigger{}, false
	}
	return Trigger{ReasonKeySizeChanged, fmt.Sprintf(
		"The certificate's key is %s %d bits, the spec asks for %s %d bits.", algorithm, size, algorithm, want)}, true
}

func issuerChanged(s *state) (Trigger, bool) {
	wantKind, haveKind := issuerKind(s.IssuerKind), issuerKind(s.Secret.IssuerKind)
	if wantKind == haveKind && s.IssuerName == s.Secret.IssuerName {
		return Trigger{}, false
	}
	if s.Secret.IssuerName == "" {
		return Trigger{ReasonIssuerChanged, fmt.Sprintf(
			"The Secret does not record which issuer wrote it, the spec names %s %s.", wantKind, s.IssuerName)}, true
	}
	return Trigger{ReasonIssuerChanged, fmt.Sprintf(
		"The certificate was issued by %s %s, the spec names %s %s.",
		haveKind, s.Secret.IssuerName, wantKind, s.IssuerName)}, true
}

func issuerServerChanged(s *state) (Trigger, bool) {
	if s.IssuerServer == "" || s.Secret.IssuerServer == "" || sameServer(s.IssuerServer, s.Secret.IssuerServer) {
		return Trigger{}, false
	}
	return Trigger{ReasonIssuerServerChanged, fmt.Sprintf(
		"The certificate was issued by the ACME server %s, %s %s now points to %s.",
		s.Secret.IssuerServer, issuerKind(s.IssuerKind), s.IssuerName, s.IssuerServer)}, true
}

// sameServer reports whether two ACME directory URLs name the same server: scheme and host
// compare case-insensitively, a trailing slash does not count, the rest compares exactly.
func sameServer(a, b string) bool {
	return normalizeServer(a) == normalizeServer(b)
}

func normalizeServer(server string) string {
	server = strings.TrimSpace(server)
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return strings.TrimSuffix(server, "/")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Host = strings.ToLower(u.Host)
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u.String()
}

func expired(s *state) (Trigger, bool) {
	if s.Now.Before(s.leaf.NotAfter) {
		return Trigger{}, false
	}
	return Trigger{ReasonExpired, fmt.Sprintf("The certificate expired at %s.", formatTime(s.leaf.NotAfter))}, true
}

func renewalDue(s *state) (Trigger, bool) {
	renewalTime := s.RenewalTime
	if renewalTime.IsZero() {
		renewalTime = RenewalTime(s.leaf.NotBefore, s.leaf.NotAfter, s.RenewBefore)
	}
	if s.Now.Before(renewalTime) {
		return Trigger{}, false
	}
	return Trigger{ReasonRenewalDue, fmt.Sprintf(
		"The certificate was due for renewal at %s; it expires at %s.",
		formatTime(renewalTime), formatTime(s.leaf.NotAfter))}, true
}

func renewalRequested(s *state) (Trigger, bool) {
	if !s.RenewalRequested {
		return Trigger{}, false
	}
	return Trigger{ReasonRenewalRequested, "A renewal was requested with the certpilot.dev/renew annotation."}, true
}

func (s *state) wantAlgorithm() string {
	if s.KeyAlgorithm == "" {
		return KeyAlgorithmECDSA
	}
	return s.KeyAlgorithm
}

func issuerKind(kind string) string {
	if kind == "" {
		return defaultIssuerKind
	}
	return kind
}

// normalizeName makes names comparable the way DNS compares them: case-insensitively, with or
// without the root's trailing dot.
// normalizeName is a DNS name in lower case without a trailing dot, an IP address in canonical
// form.
func normalizeName(name string) string {
	if addr, ok := pki.ParseIP(name); ok {
		return addr.String()
	}
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// nameSet returns the normalized names, sorted and without duplicates.
func nameSet(names []string) []string {
	set := make([]string, 0, len(names))
	for _, name := range names {
		set = append(set, normalizeName(name))
	}
	slices.Sort(set)
	return slices.Compact(set)
}

// difference returns the names of sorted set a that are not in sorted set b.
func difference(a, b []string) []string {
	var out []string
	for _, name := range a {
		if _, found := slices.BinarySearch(b, name); !found {
			out = append(out, name)
		}
	}
	return out
}
