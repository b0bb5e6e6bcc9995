package solver

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/dns01"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/outcome"
)

// dnsRetry is how soon a failed DNS update is tried again (the order stays open; no new order
// at the CA).
const dnsRetry = 10 * time.Second

// DNS01Record returns the TXT record dns-01 checks for a challenge: its fully qualified name
// ("_acme-challenge.<name>.", without the "*." of a wildcard, so a wildcard and its base domain
// share one name and need both values) and its value, the base64url SHA-256 of the key
// authorization (RFC 8555 section 8.4).
func DNS01Record(dnsName, keyAuthorization string) (fqdn, value string) {
	digest := sha256.Sum256([]byte(keyAuthorization))
	return acme.DNS01RecordName(dnsName), base64.RawURLEncoding.EncodeToString(digest[:])
}

// rfc2136Solver answers dns-01 with TSIG-signed dynamic updates on an authoritative server.
type rfc2136Solver struct {
	deps   *Deps
	owner  Owner
	source Source
	spec   *certpilotv1alpha1.DNS01Solver
}

func (s *rfc2136Solver) Type() string         { return ChallengeDNS01 }
func (s *rfc2136Solver) AutoRenewable() bool  { return true }
func (s *rfc2136Solver) NeedsFinalizer() bool { return true }

// updater builds the RFC 2136 client, with the TSIG secret read from its Secret.
func (s *rfc2136Solver) updater(ctx context.Context) (*dns01.RFC2136, error) {
	spec := s.spec.RFC2136
	value, err := s.deps.readSecretKey(ctx, s.source.SecretNamespace, spec.TSIGSecretRef.Name, spec.TSIGSecretRef.Key)
	var missing *kube.SecretKeyError
	switch {
	case errors.As(err, &missing) && missing.Missing:
		return nil, outcome.NewStalled("MissingTSIGSecret", "TSIG %v", err)
	case errors.As(err, &missing):
		return nil, outcome.NewStalled("InvalidTSIGSecret", "TSIG %v", err)
	case err != nil:
		return nil, err
	}
	secret := strings.TrimSpace(string(value))
	if decoded, err := base64.StdEncoding.DecodeString(secret); err != nil || len(decoded) == 0 {
		// Signing would fail at every update, reported as the server refusing the signature.
		return nil, outcome.NewStalled("InvalidTSIGSecret", "TSIG Secret %s/%s key %q is not a base64-encoded secret (as BIND's key blocks and tsig-keygen write it)",
			s.source.SecretNamespace, spec.TSIGSecretRef.Name, spec.TSIGSecretRef.Key)
	}
	return &dns01.RFC2136{
		Nameserver:    spec.Nameserver,
		TSIGKeyName:   spec.TSIGKeyName,
		TSIGAlgorithm: spec.TSIGAlgorithm,
		TSIGSecret:    secret,
	}, nil
}

// Prepare checks the TSIG Secret before an order is opened.
func (s *rfc2136Solver) Prepare(ctx context.Context) error {
	_, err := s.updater(ctx)
	return err
}

// resolvers are the servers the solver asks for CNAMEs and NS records: nameservers, else the
// RFC 2136 server.
func (s *rfc2136Solver) resolvers() []string {
	if len(s.spec.Nameservers) > 0 {
		return s.spec.Nameservers
	}
	return []string{s.spec.RFC2136.Nameserver}
}

// record returns the TXT record of a challenge: its name, or with cnameStrategy Follow the
// target of the CNAME at that name, and its value.
func (s *rfc2136Solver) record(ctx context.Context, c Challenge) (fqdn, value string, err error) {
	fqdn, value = DNS01Record(c.DNSName, c.KeyAuthorization)
	if s.spec.CNAMEStrategy != certpilotv1alpha1.CNAMEStrategyFollow {
		return fqdn, value, nil
	}
	target, err := dns01.FollowCNAME(ctx, s.resolvers(), fqdn)
	if err != nil {
		return "", "", outcome.NewWait(dnsRetry, "DNSCNAMELookupFailed", "Following the CNAME at %s failed: %v", fqdn, err)
	}
	return target, value, nil
}

// Present adds the TXT records that are not visible at the authoritative server yet.
func (s *rfc2136Solver) Present(ctx context.Context, challenges []Challenge) error {
	updater, err := s.updater(ctx)
	if err != nil {
		return err
	}
	for _, c := range challenges {
		fqdn, value, err := s.record(ctx, c)
		if err != nil {
			return err
		}
		if visible, err := dns01.Visible(ctx, []string{updater.Nameserver}, fqdn, value); err == nil && visible {
			continue
		}
		if err := updater.Present(ctx, fqdn, value); err != nil {
			s.forgetRefusedKey(err)
			return updateError(updater, fqdn, err)
		}
		ctrl.LoggerFrom(ctx).Info("Created TXT record", "record", fqdn, "nameserver", updater.Nameserver)
	}
	return nil
}

// forgetRefusedKey drops the remembered TSIG key when the server refused its signature: the
// Secret may hold a new one since.
func (s *rfc2136Solver) forgetRefusedKey(err error) {
	if errors.Is(err, dns01.ErrTSIG) {
		ref := s.spec.RFC2136.TSIGSecretRef
		s.deps.forgetSecretKey(s.source.SecretNamespace, ref.Name, ref.Key)
	}
}

// updateError turns an update failure into a condition that says what to fix.
func updateError(updater *dns01.RFC2136, fqdn string, err error) error {
	reason := "DNSUpdateFailed"
	switch {
	case errors.Is(err, dns01.ErrTSIG):
		reason = "DNSUpdateUnauthorized"
	case errors.Is(err, dns01.ErrRefused):
		reason = "DNSUpdateRefused"
	case errors.Is(err, dns01.ErrUnreachable):
		reason = "DNSServerUnreachable"
	}
	return outcome.NewWait(dnsRetry, reason, "Creating TXT record %s at %s failed: %v", fqdn, updater.Nameserver, err)
}

// Check requires the record at every authoritative nameserver of its zone (found by an NS
// lookup at the resolvers), not only at the server that was updated: a validator may ask any.
func (s *rfc2136Solver) Check(ctx context.Context, c Challenge) error {
	fqdn, value, err := s.record(ctx, c)
	if err != nil {
		return err
	}
	servers, err := dns01.AuthoritativeNameservers(ctx, s.resolvers(), fqdn)
	if err != nil {
		return fmt.Errorf("TXT record %s %q: finding the zone's authoritative nameservers: %w", fqdn, value, err)
	}
	missing, err := dns01.MissingAt(ctx, servers, fqdn, value)
	if err != nil {
		return fmt.Errorf("TXT record %s %q: %w", fqdn, value, err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("TXT record %s with value %q is not visible at %s (%d of the zone's %d authoritative nameservers)",
			fqdn, value, strings.Join(missing, ", "), len(missing), len(servers))
	}
	return nil
}

func (s *rfc2136Solver) NotVisible(failures []string, pending int) (string, string) {
	return "DNSRecordNotVisible", fmt.Sprintf("%d of %d TXT records are not visible yet; the CA is not asked to validate until they are: %s",
		len(failures), pending, joinFailures(failures))
}

// CleanUp removes the challenges' TXT values (and only them: other values at the name stay).
func (s *rfc2136Solver) CleanUp(ctx context.Context, challenges []Challenge) error {
	updater, err := s.updater(ctx)
	if err != nil {
		// Without the key nothing can be removed: the records stay in the zone (harmless, but
		// clutter) until someone deletes them.
		ctrl.LoggerFrom(ctx).Info("Cannot remove dns-01 TXT records without the TSIG key", "error", err.Error())
		return nil
	}
	for _, c := range challenges {
		if c.Type != ChallengeDNS01 || c.Token == "" || c.KeyAuthorization == "" {
			continue
		}
		fqdn, value, err := s.record(ctx, c)
		if err != nil {
			return err
		}
		if err := updater.CleanUp(ctx, fqdn, value); err != nil {
			s.forgetRefusedKey(err)
			return fmt.Errorf("removing TXT record %s at %s: %w", fqdn, updater.Nameserver, err)
		}
	}
	return nil
}

// manualSolver asks a person to create the TXT records and waits until they are visible.
type manualSolver struct {
	deps  *Deps
	owner Owner
	spec  *certpilotv1alpha1.DNS01Solver
}

func (s *manualSolver) Type() string                  { return ChallengeDNS01 }
func (s *manualSolver) AutoRenewable() bool           { return false }
func (s *manualSolver) NeedsFinalizer() bool          { return false }
func (s *manualSolver) Prepare(context.Context) error { return nil }

// Present publishes nothing: it tells the user, once per challenge, which record to create and
// by when.
func (s *manualSolver) Present(_ context.Context, challenges []Challenge) error {
	for _, c := range challenges {
		if c.Announced {
			continue
		}
		fqdn, value := DNS01Record(c.DNSName, c.KeyAuthorization)
		s.deps.Recorder.Eventf(s.owner.Object, nil, corev1.EventTypeNormal, "DNSRecordRequired", "Issue",
			"Create the TXT record %s with the value %q for %s%s", fqdn, value, c.DNSName, s.deadline(c))
	}
	return nil
}

// Check looks for the record; while it is missing, the message says when the CA's
// authorization expires, which is how long the person has.
func (s *manualSolver) Check(ctx context.Context, c Challenge) error {
	if err := checkTXT(ctx, s.spec.Nameservers, c); err != nil {
		return fmt.Errorf("%w%s", err, s.deadline(c))
	}
	return nil
}

// deadline is ", before <time> (in <duration>), when the CA's authorization expires", or empty
// when the CA did not say.
func (s *manualSolver) deadline(c Challenge) string {
	if c.Expires.IsZero() {
		return ""
	}
	left := "already past"
	if d := c.Expires.Sub(s.deps.now()); d > 0 {
		left = "in " + strings.TrimSuffix(d.Truncate(time.Minute).String(), "0s")
		if d < time.Minute {
			left = "in less than a minute"
		}
	}
	return fmt.Sprintf(", before %s (%s), when the CA's authorization for it expires and the order with it",
		c.Expires.UTC().Format(time.RFC3339), left)
}

func (s *manualSolver) NotVisible(failures []string, pending int) (string, string) {
	return "DNSRecordRequired", fmt.Sprintf(
		"Waiting for %d of %d TXT records a person must create (dns01 manual); certpilot continues when they are visible: %s. "+
			"With dns01 persist (dns-persist-01) one record per name, set once, would make this Certificate renew by itself",
		len(failures), pending, strings.Join(failures, "; "))
}

// CleanUp cannot remove records a person created; the status told them which.
func (s *manualSolver) CleanUp(context.Context, []Challenge) error { return nil }

// checkTXT reports whether the challenge's TXT record is visible at nameservers (the system
// resolver when empty), with a message naming the record to create.
func checkTXT(ctx context.Context, nameservers []string, c Challenge) error {
	fqdn, value := DNS01Record(c.DNSName, c.KeyAuthorization)
	visible, err := dns01.Visible(ctx, nameservers, fqdn, value)
	if err != nil {
		return fmt.Errorf("TXT record %s %q: %w", fqdn, value, err)
	}
	if !visible {
		where := "the system resolver"
		if len(nameservers) > 0 {
			where = strings.Join(nameservers, ", ")
		}
		return fmt.Errorf("TXT record %s with value %q is not visible at %s", fqdn, value, where)
	}
	return nil
}
