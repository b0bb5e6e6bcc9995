package edge

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
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
//
// Its content is the union of parts: one per source object (each challenge shard Secret of the
// load balancer, the single Secret of earlier versions), or one for a whole mounted directory.
// An update parses only the entries whose bytes changed and re-indexes only its own part, so a
// change to one shard costs that shard's size, however many responses the other shards hold
// (the whole store was once merged again at every update: with 3,000 responses in flight that
// made the edge the bottleneck).
type ChallengeStore struct {
	mu sync.RWMutex
	// parts holds the content of each part by its name.
	parts map[string]*challengePart
	// certificates maps a lower-case DNS name to its tls-alpn-01 challenge certificate.
	certificates map[string]*tls.Certificate
	// keyAuthorizations maps an http-01 token to its key authorization.
	keyAuthorizations map[string]string
	// synced turns true once a source has delivered the truth at least once, so that readiness
	// never reports a store that merely has not heard from its source yet.
	synced bool
}

// challengePart is the content of one part.
type challengePart struct {
	// entries are the part's entries by key, as last given, with what was parsed of them.
	entries map[string]parsedEntry
	// served holds the part's good entries by what they serve, for unindex to find the one
	// that takes over a name: two keys that differ in the case of a DNS name serve the same one.
	served map[servedName]parsedEntry
}

func newChallengePart(entries map[string]parsedEntry) *challengePart {
	part := &challengePart{entries: entries, served: make(map[servedName]parsedEntry, len(entries))}
	for _, entry := range entries {
		if entry.err == nil {
			part.served[entry.servedName()] = entry
		}
	}
	return part
}

// servedName is what an entry is looked up by: its challenge type and the name the store's maps
// use (a lower-case DNS name, an http-01 token).
type servedName struct {
	challengeType string
	name          string
}

// parsedEntry is one entry of a part: its bytes and what they hold (err when skipped).
type parsedEntry struct {
	value            []byte
	challengeType    string
	name             string
	certificate      *tls.Certificate
	keyAuthorization string
	err              error
}

func (e parsedEntry) servedName() servedName {
	return servedName{challengeType: e.challengeType, name: e.name}
}

// NewChallengeStore returns an empty store that has not synced.
func NewChallengeStore() *ChallengeStore {
	return &ChallengeStore{
		parts:             map[string]*challengePart{},
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
	s.mu.Lock()
	for part, content := range s.parts {
		if part != "" {
			delete(s.parts, part)
			s.reindex(part, content.entries, nil)
		}
	}
	s.mu.Unlock()
	changed, err = s.ReplacePart("", data)
	s.MarkSynced()
	return changed, err
}

// ReplacePart makes data the content of one part (one source object) and leaves the others;
// it does not mark the store synced (the source does, once all its parts are delivered). Only
// entries whose bytes changed since the part's last update are parsed; bad entries are skipped
// and reported as by Replace.
func (s *ChallengeStore) ReplacePart(part string, data map[string][]byte) (changed bool, err error) {
	s.mu.RLock()
	previous := s.entriesOf(part)
	unchanged := previous != nil && len(previous) == len(data)
	if unchanged {
		for key, value := range data {
			if entry, ok := previous[key]; !ok || !bytes.Equal(entry.value, value) {
				unchanged = false
				break
			}
		}
	}
	s.mu.RUnlock()
	if unchanged {
		return false, nil
	}

	// Parse outside the lock: handshakes keep reading the old set meanwhile.
	entries := make(map[string]parsedEntry, len(data))
	var errs []error
	for key, value := range data {
		if entry, ok := previous[key]; ok && bytes.Equal(entry.value, value) {
			entries[key] = entry
			continue
		}
		entry := parseEntry(key, value)
		if entry.err != nil {
			errs = append(errs, &EntryError{Key: key, Err: entry.err})
		}
		entries[key] = entry
	}
	updated := newChallengePart(entries)

	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.entriesOf(part)
	s.parts[part] = updated
	s.reindex(part, old, entries)
	return true, errors.Join(errs...)
}

// ClearPart drops one part, as when its Secret is deleted.
func (s *ChallengeStore) ClearPart(part string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.entriesOf(part)
	delete(s.parts, part)
	s.reindex(part, old, nil)
}

// entriesOf returns the entries of part, nil when the store has no such part. The caller holds
// mu.
func (s *ChallengeStore) entriesOf(part string) map[string]parsedEntry {
	if p := s.parts[part]; p != nil {
		return p.entries
	}
	return nil
}

// reindex updates the maps handshakes and requests read after one part changed from old to
// current (nil: removed), touching only that part's entries: an update costs the size of its
// part, not of the whole store. A name another part also holds stays served from there. The
// caller holds mu.
func (s *ChallengeStore) reindex(part string, old, current map[string]parsedEntry) {
	for key, entry := range old {
		if replacement, ok := current[key]; ok && replacement.err == nil && replacement.challengeType == entry.challengeType {
			continue // served from the new entry below
		}
		s.unindex(part, entry)
	}
	for _, entry := range current {
		s.index(entry)
	}
}

// index serves entry (skipped entries serve nothing).
func (s *ChallengeStore) index(entry parsedEntry) {
	switch {
	case entry.err != nil:
	case entry.challengeType == challengeTypeTLSALPN01:
		s.certificates[entry.name] = entry.certificate
	case entry.challengeType == challengeTypeHTTP01:
		s.keyAuthorizations[entry.name] = entry.keyAuthorization
	}
}

// unindex stops serving entry, a former entry of part, unless what is served for its name came
// from elsewhere; another part holding an entry for the same name (the same key, or one whose DNS
// name differs only in case) serves it from then on.
func (s *ChallengeStore) unindex(part string, entry parsedEntry) {
	switch {
	case entry.err != nil:
		return
	case entry.challengeType == challengeTypeTLSALPN01:
		if s.certificates[entry.name] != entry.certificate {
			return
		}
		delete(s.certificates, entry.name)
	case entry.challengeType == challengeTypeHTTP01:
		if s.keyAuthorizations[entry.name] != entry.keyAuthorization {
			return
		}
		delete(s.keyAuthorizations, entry.name)
	default:
		return
	}
	name := entry.servedName()
	for other, content := range s.parts {
		if other == part {
			continue
		}
		if e, ok := content.served[name]; ok {
			s.index(e)
			return
		}
	}
}

// parseEntry parses one challenge Secret entry.
func parseEntry(key string, value []byte) parsedEntry {
	entry := parsedEntry{value: bytes.Clone(value)}
	challengeType, name, ok := v1alpha1.ParseChallengeKey(key)
	if !ok {
		entry.err = errors.New("not a challenge key of the load balancer contract")
		return entry
	}
	entry.challengeType = challengeType
	switch challengeType {
	case challengeTypeTLSALPN01:
		entry.name = strings.ToLower(name)
		entry.certificate, entry.err = parseChallengeCertificate(entry.name, value)
	case challengeTypeHTTP01:
		entry.name = name
		entry.keyAuthorization = strings.TrimSpace(string(value))
		if entry.keyAuthorization == "" {
			entry.err = errors.New("empty key authorization")
		}
	}
	return entry
}

// Clear empties the store, as when the challenge Secret is deleted, and marks it synced: an
// absent Secret is a known state, not a missing one.
func (s *ChallengeStore) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts = map[string]*challengePart{}
	s.certificates, s.keyAuthorizations = map[string]*tls.Certificate{}, map[string]string{}
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
// case-insensitively, a trailing dot ignored), if any. The server name of an IP address's
// validation (RFC 8738) is its reverse-DNS name, which is also its contract key.
func (s *ChallengeStore) ChallengeCertificate(serverName string) (*tls.Certificate, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	certificate, ok := s.certificates[strings.ToLower(strings.TrimSuffix(serverName, "."))]
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
// and checks that it is a tls-alpn-01 certificate for dnsName (RFC 8737, section 3), or, when
// dnsName is the reverse-DNS name of an IP address (the SNI of an RFC 8738 validation), for
// that IP address as its only iPAddress name: the CA would reject anything else, and a mistake
// found here is cheaper than a failed validation, which costs rate limit.
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
	if addr, ok := pki.IPFromReverseName(dnsName); ok {
		if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IP(addr.AsSlice())) ||
			len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.URIs) != 0 {
			return nil, fmt.Errorf("certificate must name exactly the IP address %s as its only subjectAltName", addr)
		}
	} else if len(leaf.DNSNames) != 1 || !strings.EqualFold(leaf.DNSNames[0], dnsName) ||
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
