package controllers

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
)

// How long to wait before checking again a challenge response the load balancer does not serve
// yet: it may be reloading, or kubelet may be syncing the Secret volume (up to a minute or two),
// so check soon at first, then back off to a slow poll for a load balancer that never serves it.
const (
	selfCheckRetry    = 5 * time.Second
	selfCheckMaxRetry = 5 * time.Minute
)

// selfCheckDelay grows with the time the certificate has been reconciling: a quarter of it,
// between selfCheckRetry and selfCheckMaxRetry. It is derived from the Reconciling condition,
// so it survives a restart.
func selfCheckDelay(run *certificateRun) time.Duration {
	reconciling := meta.FindStatusCondition(run.cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling)
	if reconciling == nil || reconciling.Status != metav1.ConditionTrue {
		return selfCheckRetry
	}
	return min(max(run.now.Sub(reconciling.LastTransitionTime.Time)/4, selfCheckRetry), selfCheckMaxRetry)
}

// pendingChallenge is a challenge the CA has not been asked to validate yet.
type pendingChallenge struct {
	dnsName   string
	challenge acme.Challenge
	// keyAuthorization is what the response proves (RFC 8555 section 8.1).
	keyAuthorization string
}

// presentChallenges publishes a response for every pending authorization through the load
// balancer and self-checks it. Only challenges whose response is really served are accepted:
// failed validations count against the CA's rate limits.
func (r *CertificateReconciler) presentChallenges(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	if run.order.Status != acme.StatusPending {
		return ctrl.Result{}, nil
	}
	challengeType, err := solverChallengeType(run.solver)
	if err != nil {
		return ctrl.Result{}, err
	}

	var statuses []certpilotv1alpha1.ChallengeStatus
	var pending []pendingChallenge
	for _, url := range run.order.AuthzURLs {
		authz, err := run.acme.GetAuthorization(ctx, url)
		if err != nil {
			return ctrl.Result{}, err
		}
		dnsName := authz.Identifier
		if authz.Wildcard {
			dnsName = "*." + dnsName
		}
		status := certpilotv1alpha1.ChallengeStatus{DNSName: dnsName, Type: challengeType, State: authz.Status}
		switch authz.Status {
		case acme.StatusValid:
			statuses = append(statuses, status)
			continue
		case acme.StatusPending:
		default:
			statuses = append(statuses, status)
			continue // invalid authorizations fail the order, which waitForOrder reports
		}
		challenge, ok := authz.Challenge(challengeType)
		if !ok {
			return ctrl.Result{}, r.recordFailure(ctx, run, true, "ChallengeNotOffered", "the CA offers no %s challenge for %s", challengeType, dnsName)
		}
		status.URL, status.State = challenge.URL, challenge.Status
		statuses = append(statuses, status)
		if challenge.Status != acme.StatusPending {
			continue // already accepted; the CA is validating it
		}
		_, keyAuthorization, err := run.acme.HTTP01Response(challenge.Token)
		if err != nil {
			return ctrl.Result{}, err
		}
		pending = append(pending, pendingChallenge{dnsName: dnsName, challenge: challenge, keyAuthorization: keyAuthorization})
	}
	run.cert.Status.Order.Challenges = statuses
	if len(pending) == 0 {
		return ctrl.Result{}, nil
	}

	if err := r.publishChallenges(ctx, run, pending); err != nil {
		return ctrl.Result{}, err
	}
	failed := 0
	for _, p := range pending {
		status := findChallengeStatus(run.cert.Status.Order.Challenges, p.dnsName)
		if err := r.selfCheck(ctx, run, p); err != nil {
			failed++
			status.State, status.Reason = "self-check-failed", err.Error()
			continue
		}
		status.State, status.Reason = "presented", ""
		run.accept = append(run.accept, p)
	}
	if failed > 0 {
		// Accept nothing until every response is served: one failed validation fails the order.
		run.accept = nil
		return ctrl.Result{}, wait(selfCheckDelay(run), "SelfCheckFailed",
			"%d of %d challenge responses are not served yet; the CA is not asked to validate until they are (see status.order.challenges)",
			failed, len(pending))
	}
	return ctrl.Result{}, nil
}

// acceptChallenges tells the CA to validate the challenges whose responses passed the
// self-check. One request each; the CA's answer is polled by waitForOrder.
func (r *CertificateReconciler) acceptChallenges(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	for _, p := range run.accept {
		if err := run.acme.Accept(ctx, p.challenge.URL); err != nil {
			if acme.IsPermanent(err) {
				return ctrl.Result{}, r.recordFailure(ctx, run, true, "AcceptFailed", "%v", err)
			}
			return ctrl.Result{}, err
		}
		if status := findChallengeStatus(run.cert.Status.Order.Challenges, p.dnsName); status != nil {
			status.State = acme.StatusProcessing
		}
	}
	if len(run.accept) > 0 {
		ctrl.LoggerFrom(ctx).Info("Accepted challenges", "count", len(run.accept))
	}
	return ctrl.Result{}, nil
}

// selfCheck verifies that the load balancer serves the response as the CA will see it.
func (r *CertificateReconciler) selfCheck(ctx context.Context, run *certificateRun, p pendingChallenge) error {
	timeout := r.SelfCheckTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case run.solver.TLSALPN01 != nil:
		address := run.solver.TLSALPN01.ProbeAddress
		if address == "" {
			address = net.JoinHostPort(p.dnsName, "443")
		}
		return acme.CheckTLSALPN01(ctx, address, p.dnsName, p.keyAuthorization)
	default:
		return fmt.Errorf("no self-check for this solver")
	}
}

// solverChallengeType maps the solver to its ACME challenge type. Only tls-alpn-01 is served so
// far; http-01 and dns-01 are reported, not silently ignored.
func solverChallengeType(solver *certpilotv1alpha1.Solver) (string, error) {
	switch {
	case solver.TLSALPN01 != nil:
		return acme.ChallengeTLSALPN01, nil
	case solver.HTTP01 != nil:
		return "", stalled("SolverNotSupported", "the http01 solver is not implemented yet in this version of certpilot; use tlsALPN01")
	default:
		return "", stalled("SolverNotSupported", "the dns01 solver is not implemented yet in this version of certpilot; use tlsALPN01")
	}
}

func findChallengeStatus(statuses []certpilotv1alpha1.ChallengeStatus, dnsName string) *certpilotv1alpha1.ChallengeStatus {
	for i := range statuses {
		if strings.EqualFold(statuses[i].DNSName, dnsName) {
			return &statuses[i]
		}
	}
	return nil
}
