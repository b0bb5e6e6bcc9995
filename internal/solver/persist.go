package solver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/dns01"
	"github.com/certpilot/certpilot/internal/outcome"
)

// persistRecheck is how soon a dns-persist-01 record that must change is looked at again before
// an order is opened (nothing watches DNS).
const persistRecheck = time.Minute

// defaultRenewalCycle is the time from issuance to renewal assumed when no certificate was
// issued yet: Let's Encrypt's 90-day certificates renewed 30 days before they expire.
const defaultRenewalCycle = 60 * 24 * time.Hour

// Reasons of the dns01 persist solver that are not a dns01.PersistVerdict.
const (
	reasonPersistLookupFailed     = "PersistRecordLookupFailed"
	reasonPersistNoIssuerDomain   = "PersistNoIssuerDomainName"
	reasonPersistUntilBeforeRenew = "PersistUntilBeforeRenewal"
)

// persistSolver answers dns-persist-01 (draft-ietf-acme-dns-persist): the zone's owner sets one
// TXT record per name, "_validation-persist.<name>", naming the CA and the issuer's account; the
// solver says which, checks it read-only and never writes DNS.
type persistSolver struct {
	deps   *Deps
	owner  Owner
	source Source
	spec   *certpilotv1alpha1.DNS01Solver

	mu sync.Mutex
	// reasons remembers the verdict behind each failure message Check returned, so that
	// NotVisible names the precise reason.
	reasons map[string]string
}

func newPersistSolver(deps *Deps, owner Owner, source Source, spec *certpilotv1alpha1.DNS01Solver) *persistSolver {
	return &persistSolver{deps: deps, owner: owner, source: source, spec: spec, reasons: map[string]string{}}
}

func (s *persistSolver) Type() string        { return ChallengeDNSPersist01 }
func (s *persistSolver) AutoRenewable() bool { return true }

// NeedsFinalizer is false: the solver writes no response anywhere.
func (s *persistSolver) NeedsFinalizer() bool { return false }

// PersistRecordFor returns the dns-persist-01 record that validates dnsName (and, when
// wildcard, "*.<name>") for the account at the CA named issuerDomainName, as the persist spec
// asks for it.
func PersistRecordFor(spec *certpilotv1alpha1.PersistDNS01, issuerDomainName, accountURI string, wildcard bool) dns01.PersistRecord {
	record := dns01.PersistRecord{IssuerDomainName: issuerDomainName, AccountURI: accountURI, Wildcard: wildcard}
	if spec != nil && spec.PersistUntil != nil {
		record.PersistUntil = spec.PersistUntil.Time
	}
	return record
}

// wildcard reports whether the record of dnsName must carry policy=wildcard: the name is a
// wildcard, or this solver also validates the wildcard of its base name (both share the record).
func (s *persistSolver) wildcard(dnsName string) bool {
	base := strings.TrimPrefix(dnsName, "*.")
	return strings.HasPrefix(dnsName, "*.") || slices.Contains(s.source.Names, "*."+base)
}

// persistCheck is the outcome of looking at one name's record.
type persistCheck struct {
	fqdn    string
	want    dns01.PersistRecord
	servers []string
	// evaluation is the first refusal among the servers, or the acceptance.
	evaluation dns01.PersistEvaluation
	// server is the server the evaluation comes from.
	server string
}

// look asks every server for the record of dnsName and evaluates it as the CA would.
func (s *persistSolver) look(ctx context.Context, dnsName string, issuers []string, accountURI string) (persistCheck, error) {
	check := persistCheck{
		fqdn: dns01.PersistRecordName(dnsName),
		want: PersistRecordFor(s.spec.Persist, issuers[0], accountURI, s.wildcard(dnsName)),
	}
	servers := s.spec.Nameservers
	if len(servers) == 0 {
		resolvers, err := dns01.SystemResolvers()
		if err != nil {
			return check, err
		}
		if servers, err = dns01.AuthoritativeNameservers(ctx, resolvers, check.fqdn); err != nil {
			return check, fmt.Errorf("finding the authoritative nameservers of %s: %w", check.fqdn, err)
		}
	}
	check.servers = servers
	now := s.deps.now()
	for _, server := range servers {
		values, err := dns01.TXT(ctx, server, check.fqdn)
		if err != nil {
			return check, err
		}
		evaluation := dns01.EvaluatePersist(values, issuers, accountURI, strings.HasPrefix(dnsName, "*."), now)
		if check.server == "" || evaluation.Verdict != dns01.PersistAccepted && check.evaluation.Verdict == dns01.PersistAccepted {
			check.evaluation, check.server = evaluation, server
		}
	}
	return check, nil
}

// message says what is wrong with the record and what to set it to.
func (c persistCheck) message() string {
	value := strconv.Quote(c.want.Value())
	if c.evaluation.Verdict == dns01.PersistMissing {
		return fmt.Sprintf("TXT record %s with the value %s is not visible at %s: create it once, certpilot then issues and renews by itself",
			c.fqdn, value, strings.Join(c.servers, ", "))
	}
	return fmt.Sprintf("TXT record %s at %s must be updated to the value %s: %s",
		c.fqdn, c.server, value, c.evaluation.Detail)
}

// Prepare checks, before an order is opened, the records that exist for the CA (its
// directory's caaIdentities): one naming another account (the issuer's key or server changed),
// lacking policy=wildcard or past its persistuntil is reported now, with the record to set, and
// no order is opened. A missing record is not: the order's challenges show it. It also warns when
// a record's persistuntil passes before the next renewal.
func (s *persistSolver) Prepare(ctx context.Context) error {
	if s.source.Account == nil {
		return nil
	}
	accountURI, issuers, err := s.source.Account(ctx)
	if err != nil {
		return err
	}
	if accountURI == "" || len(issuers) == 0 {
		return nil // the order's challenge names the issuer domains; Check looks then
	}
	var failures []string
	var reason string
	var expiring []string
	for _, dnsName := range s.recordNames() {
		check, err := s.look(ctx, dnsName, issuers, accountURI)
		if err != nil {
			return outcome.NewWait(persistRecheck, reasonPersistLookupFailed, "Looking up the dns-persist-01 record of %s failed: %v", dnsName, err)
		}
		switch check.evaluation.Verdict {
		case dns01.PersistAccepted:
			if until := check.evaluation.Record.PersistUntil; !until.IsZero() {
				persistUntil.WithLabelValues(s.owner.Namespace, s.owner.Name, check.fqdn).Set(float64(until.Unix()))
				if until.Before(s.nextRenewal()) {
					expiring = append(expiring, fmt.Sprintf("%s (persistuntil %s)", check.fqdn, until.UTC().Format(time.RFC3339)))
				}
			} else {
				persistUntil.DeleteLabelValues(s.owner.Namespace, s.owner.Name, check.fqdn)
			}
		case dns01.PersistMissing:
		default:
			if reason == "" {
				reason = string(check.evaluation.Verdict)
			}
			failures = append(failures, check.message())
		}
	}
	s.noteExpiring(expiring)
	if len(failures) > 0 {
		return outcome.NewWait(persistRecheck, reason,
			"%d dns-persist-01 records must be updated before certpilot orders a certificate; the CA is asked nothing until then: %s",
			len(failures), strings.Join(failures, "; "))
	}
	return nil
}

// recordNames lists one name per record: the wildcard when the solver validates it (its record
// is the stricter), else the name.
func (s *persistSolver) recordNames() []string {
	var names []string
	seen := map[string]bool{}
	for _, name := range s.source.Names {
		fqdn := dns01.PersistRecordName(name)
		if seen[fqdn] {
			continue
		}
		seen[fqdn] = true
		if base := strings.TrimPrefix(name, "*."); slices.Contains(s.source.Names, "*."+base) {
			name = "*." + base
		}
		names = append(names, name)
	}
	return names
}

// nextRenewal estimates when the certificate about to be issued will be renewed: as long after
// now as the current certificate's renewal came after its issuance, else defaultRenewalCycle.
func (s *persistSolver) nextRenewal() time.Time {
	now := s.deps.now()
	if cert, ok := s.owner.Object.(*certpilotv1alpha1.Certificate); ok {
		status := cert.Status
		if status.NotBefore != nil && status.RenewalTime != nil && status.RenewalTime.After(status.NotBefore.Time) {
			return now.Add(status.RenewalTime.Sub(status.NotBefore.Time))
		}
	}
	return now.Add(defaultRenewalCycle)
}

// noteExpiring sets or removes the PersistRecordExpiring condition and its metric.
func (s *persistSolver) noteExpiring(expiring []string) {
	cert, ok := s.owner.Object.(*certpilotv1alpha1.Certificate)
	if !ok {
		return
	}
	if len(expiring) == 0 {
		meta.RemoveStatusCondition(&cert.Status.Conditions, certpilotv1alpha1.ConditionPersistRecordExpiring)
		persistExpiring.WithLabelValues(s.owner.Namespace, s.owner.Name).Set(0)
		return
	}
	meta.SetStatusCondition(&cert.Status.Conditions, metav1.Condition{
		Type: certpilotv1alpha1.ConditionPersistRecordExpiring, Status: metav1.ConditionTrue,
		Reason: reasonPersistUntilBeforeRenew, ObservedGeneration: cert.Generation,
		Message: fmt.Sprintf("The dns-persist-01 records %s stop validating before the next renewal (about %s): extend their persistuntil (and spec persistUntil) or remove it, or renewals will wait for a person",
			strings.Join(expiring, ", "), s.nextRenewal().UTC().Format(time.RFC3339)),
	})
	persistExpiring.WithLabelValues(s.owner.Namespace, s.owner.Name).Set(1)
}

// Present writes nothing: it tells the zone's owner, once per challenge, which record to
// create, when it is not there yet.
func (s *persistSolver) Present(ctx context.Context, challenges []Challenge) error {
	for _, c := range challenges {
		if c.Announced || len(c.IssuerDomainNames) == 0 {
			continue
		}
		check, err := s.look(ctx, c.DNSName, c.IssuerDomainNames, c.AccountURI)
		if err != nil || check.evaluation.Verdict == dns01.PersistAccepted {
			continue // Check reports lookup failures
		}
		s.deps.Recorder.Eventf(s.owner.Object, nil, corev1.EventTypeNormal, "DNSPersistRecordRequired", "Issue",
			"Create the TXT record %s with the value %q for %s, once: certpilot then issues and renews it by itself (zone file: %s)",
			check.fqdn, check.want.Value(), c.DNSName, dns01.ZoneFileLine(check.fqdn, check.want.Value(), dns01.PersistTTL))
	}
	return nil
}

// Check looks, read-only, for a record the CA will accept for the challenge, at the configured
// nameservers (default: the zone's authoritative servers) and says precisely what is wrong.
func (s *persistSolver) Check(ctx context.Context, c Challenge) error {
	if len(c.IssuerDomainNames) == 0 {
		return s.fail(reasonPersistNoIssuerDomain, fmt.Sprintf(
			"the CA names no issuer domain for the dns-persist-01 challenge of %s (no issuer-domain-names, no caaIdentities in its directory)", c.DNSName))
	}
	if c.AccountURI == "" {
		return errors.New("the issuer's ACME account URL is not known yet")
	}
	check, err := s.look(ctx, c.DNSName, c.IssuerDomainNames, c.AccountURI)
	if err != nil {
		return s.fail(reasonPersistLookupFailed, fmt.Sprintf("TXT record %s: %v", dns01.PersistRecordName(c.DNSName), err))
	}
	if check.evaluation.Verdict == dns01.PersistAccepted {
		return nil
	}
	return s.fail(string(check.evaluation.Verdict), check.message())
}

func (s *persistSolver) fail(reason, message string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reasons[message] = reason
	return errors.New(message)
}

func (s *persistSolver) NotVisible(failures []string, pending int) (string, string) {
	s.mu.Lock()
	reason := s.reasons[failures[0]]
	s.mu.Unlock()
	if reason == "" {
		reason = string(dns01.PersistMissing)
	}
	return reason, fmt.Sprintf(
		"Waiting for %d of %d dns-persist-01 records (dns01 persist); the CA is not asked to validate until the zone's owner sets them: %s",
		len(failures), pending, strings.Join(failures, "; "))
}

// CleanUp removes nothing: the records are the zone owner's and serve every renewal. When the
// Certificate is being deleted, its metric series go.
func (s *persistSolver) CleanUp(context.Context, []Challenge) error {
	if s.owner.Object != nil && !s.owner.Object.GetDeletionTimestamp().IsZero() {
		labels := prometheus.Labels{"namespace": s.owner.Namespace, "name": s.owner.Name}
		persistUntil.DeletePartialMatch(labels)
		persistExpiring.DeletePartialMatch(labels)
	}
	return nil
}
