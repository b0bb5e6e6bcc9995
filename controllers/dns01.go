package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/dns01"
)

// rfc2136Solver answers dns-01 with TSIG-signed dynamic updates on an authoritative server.
type rfc2136Solver struct {
	r      *CertificateReconciler
	source solverSource
}

func (s *rfc2136Solver) challengeType() string { return acme.ChallengeDNS01 }

// updater builds the RFC 2136 client, with the TSIG secret read from its Secret.
func (s *rfc2136Solver) updater(ctx context.Context, run *certificateRun) (*dns01.RFC2136, error) {
	spec := s.source.spec.DNS01.RFC2136
	namespace := run.cert.Namespace
	if s.source.fromIssuer && run.issuer != nil {
		namespace = s.r.Accounts.SecretNamespace(run.issuer) // the issuer's default solver
	}
	secret, err := s.r.Accounts.ReadSecret(ctx, namespace, spec.TSIGSecretRef.Name)
	if err != nil {
		return nil, err
	}
	if secret == nil {
		return nil, stalled("MissingTSIGSecret", "TSIG Secret %s/%s does not exist", namespace, spec.TSIGSecretRef.Name)
	}
	value, ok := secret.Data[spec.TSIGSecretRef.Key]
	if !ok {
		return nil, stalled("InvalidTSIGSecret", "TSIG Secret %s/%s has no key %q", namespace, spec.TSIGSecretRef.Name, spec.TSIGSecretRef.Key)
	}
	return &dns01.RFC2136{
		Nameserver:    spec.Nameserver,
		TSIGKeyName:   spec.TSIGKeyName,
		TSIGAlgorithm: spec.TSIGAlgorithm,
		TSIGSecret:    strings.TrimSpace(string(value)),
	}, nil
}

// validate checks the TSIG Secret before an order is opened.
func (s *rfc2136Solver) validate(ctx context.Context, run *certificateRun) error {
	_, err := s.updater(ctx, run)
	return err
}

// present adds the TXT records that are not visible at the authoritative server yet.
func (s *rfc2136Solver) present(ctx context.Context, run *certificateRun, pending []pendingChallenge) error {
	updater, err := s.updater(ctx, run)
	if err != nil {
		return err
	}
	if err := s.r.setFinalizer(ctx, run.cert, true); err != nil {
		return err
	}
	for _, p := range pending {
		fqdn, value, err := run.acme.DNS01Record(p.dnsName, p.challenge.Token)
		if err != nil {
			return err
		}
		if visible, err := dns01.Visible(ctx, []string{updater.Nameserver}, fqdn, value); err == nil && visible {
			continue
		}
		if err := updater.Present(ctx, fqdn, value); err != nil {
			return dnsUpdateError(run, updater, fqdn, err)
		}
		ctrl.LoggerFrom(ctx).Info("Created TXT record", "record", fqdn, "nameserver", updater.Nameserver)
	}
	return nil
}

// dnsUpdateError turns an update failure into a condition that says what to fix; the open order
// is kept and the update retried with a growing delay (no new order at the CA).
func dnsUpdateError(run *certificateRun, updater *dns01.RFC2136, fqdn string, err error) error {
	reason := "DNSUpdateFailed"
	switch {
	case errors.Is(err, dns01.ErrTSIG):
		reason = "DNSUpdateUnauthorized"
	case errors.Is(err, dns01.ErrRefused):
		reason = "DNSUpdateRefused"
	case errors.Is(err, dns01.ErrUnreachable):
		reason = "DNSServerUnreachable"
	}
	return wait(selfCheckDelay(run), reason, "Creating TXT record %s at %s failed: %v", fqdn, updater.Nameserver, err)
}

// check asks the configured nameservers (default: the authoritative server) for the record.
func (s *rfc2136Solver) check(ctx context.Context, run *certificateRun, p pendingChallenge) error {
	nameservers := s.source.spec.DNS01.Nameservers
	if len(nameservers) == 0 {
		nameservers = []string{s.source.spec.DNS01.RFC2136.Nameserver}
	}
	return checkTXT(ctx, run, nameservers, p)
}

func (s *rfc2136Solver) notVisible(failures []string, pending int) (string, string) {
	return "DNSRecordNotVisible", fmt.Sprintf("%d of %d TXT records are not visible yet; the CA is not asked to validate until they are: %s",
		len(failures), pending, failures[0])
}

// cleanup removes the order's TXT values (and only them: other values at the name stay).
func (s *rfc2136Solver) cleanup(ctx context.Context, run *certificateRun, challenges []certpilotv1alpha1.ChallengeStatus) error {
	updater, err := s.updater(ctx, run)
	if err != nil {
		// Without the key nothing can be removed: the records stay in the zone (harmless, but
		// clutter) until someone deletes them.
		ctrl.LoggerFrom(ctx).Info("Cannot remove dns-01 TXT records without the TSIG key", "error", err.Error())
		return nil
	}
	client, err := s.r.acmeClient(ctx, run)
	if err != nil {
		return err
	}
	for _, challenge := range challenges {
		if challenge.Token == "" || challenge.Type != acme.ChallengeDNS01 {
			continue
		}
		if source, ok := solverSpecFor(run, challenge.DNSName); !ok || source.spec != s.source.spec {
			continue // another solver's name
		}
		fqdn, value, err := client.DNS01Record(challenge.DNSName, challenge.Token)
		if err != nil {
			return err
		}
		if err := updater.CleanUp(ctx, fqdn, value); err != nil {
			return fmt.Errorf("removing TXT record %s at %s: %w", fqdn, updater.Nameserver, err)
		}
	}
	return nil
}

// manualDNSSolver asks a person to create the TXT records and waits until they are visible.
type manualDNSSolver struct {
	r      *CertificateReconciler
	source solverSource
}

func (s *manualDNSSolver) challengeType() string { return acme.ChallengeDNS01 }

// present publishes nothing: it tells the user, once per challenge, which record to create.
func (s *manualDNSSolver) present(ctx context.Context, run *certificateRun, pending []pendingChallenge) error {
	for _, p := range pending {
		fqdn, value, err := run.acme.DNS01Record(p.dnsName, p.challenge.Token)
		if err != nil {
			return err
		}
		if previous := run.patchBase.Status.Order; previous != nil {
			if old := findChallengeStatus(previous.Challenges, p.dnsName); old != nil && old.Token == p.challenge.Token {
				continue // already announced
			}
		}
		s.r.Recorder.Eventf(run.cert, nil, corev1.EventTypeNormal, "DNSRecordRequired", "Issue",
			"Create the TXT record %s with the value %q for %s", fqdn, value, p.dnsName)
	}
	return nil
}

func (s *manualDNSSolver) check(ctx context.Context, run *certificateRun, p pendingChallenge) error {
	return checkTXT(ctx, run, s.source.spec.DNS01.Nameservers, p)
}

func (s *manualDNSSolver) notVisible(failures []string, pending int) (string, string) {
	return "DNSRecordRequired", fmt.Sprintf(
		"Waiting for %d of %d TXT records a person must create (dns01 manual); certpilot continues when they are visible: %s",
		len(failures), pending, strings.Join(failures, "; "))
}

// cleanup cannot remove records a person created; the status told them which.
func (s *manualDNSSolver) cleanup(context.Context, *certificateRun, []certpilotv1alpha1.ChallengeStatus) error {
	return nil
}

// checkTXT reports whether the challenge's TXT record is visible at nameservers (the system
// resolver when empty), with a message naming the record to create.
func checkTXT(ctx context.Context, run *certificateRun, nameservers []string, p pendingChallenge) error {
	fqdn, value, err := run.acme.DNS01Record(p.dnsName, p.challenge.Token)
	if err != nil {
		return err
	}
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

// acmeClient returns the run's ACME client, or builds it from the issuer (cleanup after the
// issuer stopped being Ready, or on deletion).
func (r *CertificateReconciler) acmeClient(ctx context.Context, run *certificateRun) (*acme.Client, error) {
	if run.acme != nil {
		return run.acme, nil
	}
	if run.issuer == nil {
		return nil, fmt.Errorf("the issuer of Certificate %s/%s is not available", run.cert.Namespace, run.cert.Name)
	}
	return r.Accounts.Client(ctx, run.issuer)
}
