package edge

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"

	"github.com/certpilot/certpilot/api/v1alpha1"
)

// Challenge types as v1alpha1.ParseChallengeKey names them.
const (
	challengeTypeTLSALPN01 = "tls-alpn-01"
	challengeTypeHTTP01    = "http-01"
)

// idPeACMEIdentifier is the acmeIdentifier certificate extension of RFC 8737, section 3.
var idPeACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// ChallengeStore holds the challenge responses the edge serves. It is safe for concurrent use:
// sources write it while handshakes and requests read it.
type ChallengeStore struct {
	mu sync.RWMutex
	// data is the last set of entries given to Replace, kept so that an unchanged update (an
	// informer resync, a second file event for one kubelet swap) costs a comparison instead of a
	// parse and does not report the same bad entries again.
	data map[string][]byte
	// certificates maps a lower-case DNS name to its tls-alpn-01 challenge certificate.
	certificates map[string]*tls.Certificate
	// keyAuthorizations maps an http-01 token to its key authorization.
	keyAuthorizations map[string]string
	// synced turns true once a source has delivered the truth at least once, so that readiness
	// never reports a store that merely has not heard from its source yet.
	synced bool
}

// NewChallengeStore returns an empty store that has not synced.
func NewChallengeStore() *ChallengeStore {
	return &ChallengeStore{
		certificates:      map[string]*tls.Certificate{},
		keyAuthorizations: map[string]string{},
	}
}

// EntryError reports a challenge Secret entry that the store skipped. Its message names the
// DNS name of a tls-alpn-01 entry but never an http-01 token, so it is safe to log.
type EntryError struct {
	// Key is the Secret key (or file name) of the entry. It may hold a token: do not log it.
	Key string
	Err error
}

func (e *EntryError) Error() string {
	challengeType, name, ok := v1alpha1.ParseChallengeKey(e.Key)
	switch {
	case ok && challengeType == challengeTypeTLSALPN01:
		return fmt.Sprintf("tls-alpn-01 entry for %q: %v", name, e.Err)
	case ok:
		return fmt.Sprintf("%s entry: %v", challengeType, e.Err)
	default:
		// Not a challenge key, so not a token either: naming it helps whoever put it there.
		return fmt.Sprintf("key %q: %v", e.Key, e.Err)
	}
}

func (e *EntryError) Unwrap() error { return e.Err }

// Replace makes data (a challenge Secret's data, or the files of its mounted volume) the store's
// whole content and marks the store synced. Bad entries are skipped and reported in the returned
// error (errors.Join of *EntryError); the good ones are served regardless. changed is false when
// data equals the previous update, in which case nothing is parsed and no error is returned.
func (s *ChallengeStore) Replace(data map[string][]byte) (changed bool, err error) {
	s.mu.RLock()
	unchanged := s.synced && maps.EqualFunc(s.data, data, bytes.Equal)
	s.mu.RUnlock()
	if unchanged {
		return false, nil
	}

	// Parse outside the lock: handshakes keep reading the old set meanwhile.
	certificates := map[string]*tls.Certificate{}
	keyAuthorizations := map[string]string{}
	var errs []error
	for key, value := range data {
		challengeType, name, ok := v1alpha1.ParseChallengeKey(key)
		if !ok {
			errs = append(errs, &EntryError{Key: key, Err: errors.New("not a challenge key of the load balancer contract")})
			continue
		}
		switch challengeType {
		case challengeTypeTLSALPN01:
			dnsName := strings.ToLower(name)
			certificate, err := parseChallengeCertificate(dnsName, value)
			if err != nil {
				errs = append(errs, &EntryError{Key: key, Err: err})
				continue
			}
			certificates[dnsName] = certificate
		case challengeTypeHTTP01:
			keyAuthorization := strings.TrimSpace(string(value))
			if keyAuthorization == "" {
				errs = append(errs, &EntryError{Key: key, Err: errors.New("empty key authorization")})
				continue
			}
			keyAuthorizations[name] = keyAuthorization
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = maps.Clone(data)
	s.certificates = certificates
	s.keyAuthorizations = keyAuthorizations
	s.synced = true
	return true, errors.Join(errs...)
}

// Clear empties the store, as when the challenge Secret is deleted, and marks it synced: an
// absent Secret is a known state, not a missing one.
func (s *ChallengeStore) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = nil
	s.certificates = map[string]*tls.Certificate{}
	s.keyAuthorizations = map[string]string{}
	s.synced = true
}

// MarkSynced records that the source has delivered its initial state even if it never called
// Replace or Clear (a Secret that does not exist yet).
func (s *ChallengeStore) MarkSynced() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.synced = true
}

// Synced reports whether a source has delivered its initial state.
func (s *ChallengeStore) Synced() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.synced
}

// ChallengeCertificate returns the tls-alpn-01 challenge certificate for serverName (matched
// case-insensitively), if any.
func (s *ChallengeStore) ChallengeCertificate(serverName string) (*tls.Certificate, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	certificate, ok := s.certificates[strings.ToLower(serverName)]
	return certificate, ok
}

// KeyAuthorization returns the http-01 key authorization for token, if any.
func (s *ChallengeStore) KeyAuthorization(token string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keyAuthorization, ok := s.keyAuthorizations[token]
	return keyAuthorization, ok
}

// Len returns how many tls-alpn-01 certificates and http-01 key authorizations the store holds.
func (s *ChallengeStore) Len() (tlsALPN01, http01 int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.certificates), len(s.keyAuthorizations)
}

// parseChallengeCertificate parses a contract entry (certificate PEM, then its private key PEM)
// and checks that it is a tls-alpn-01 certificate for dnsName (RFC 8737, section 3): the CA
// would reject anything else, and a mistake found here is cheaper than a failed validation,
// which costs rate limit.
func parseChallengeCertificate(dnsName string, pemData []byte) (*tls.Certificate, error) {
	// X509KeyPair takes the CERTIFICATE blocks of its first argument and the key block of its
	// second, so one PEM holding both serves as both.
	certificate, err := tls.X509KeyPair(pemData, pemData)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate and key PEM: %w", err)
	}
	leaf := certificate.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(certificate.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		certificate.Leaf = leaf
	}
	if len(leaf.DNSNames) != 1 || !strings.EqualFold(leaf.DNSNames[0], dnsName) ||
		len(leaf.IPAddresses)+len(leaf.EmailAddresses)+len(leaf.URIs) != 0 {
		return nil, fmt.Errorf("certificate must name exactly %q as its only subjectAltName", dnsName)
	}
	for _, extension := range leaf.Extensions {
		if extension.Id.Equal(idPeACMEIdentifier) {
			if !extension.Critical {
				return nil, errors.New("acmeIdentifier extension is not critical")
			}
			return &certificate, nil
		}
	}
	return nil, errors.New("certificate has no acmeIdentifier extension")
}
