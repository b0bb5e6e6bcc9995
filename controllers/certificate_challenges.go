package controllers

import (
	"context"
	"slices"
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
	// solver answers the challenge.
	solver challengeSolver
}

// distinctSolvers lists the solvers of pending challenges, in order of first use.
func distinctSolvers(pending []pendingChallenge) []challengeSolver {
	var solvers []challengeSolver
	for _, p := range pending {
		if !slices.Contains(solvers, p.solver) {
			solvers = append(solvers, p.solver)
		}
	}
	return solvers
}

// presentChallenges publishes a response for every pending authorization through the load
// balancer and self-checks it. Only challenges whose response is really served are accepted:
// failed validations count against the CA's rate limits.
func (r *CertificateReconciler) presentChallenges(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	if run.order.Status != acme.StatusPending {
		return ctrl.Result{}, nil
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
		solver, err := r.solverFor(run, dnsName)
		if err != nil {
			return ctrl.Result{}, err
		}
		challengeType := solver.challengeType()
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
		status.URL, status.State, status.Token = challenge.URL, challenge.Status, challenge.Token
		statuses = append(statuses, status)
		if challenge.Status != acme.StatusPending {
			continue // already accepted; the CA is validating it
		}
		_, keyAuthorization, err := run.acme.HTTP01Response(challenge.Token)
		if err != nil {
			return ctrl.Result{}, err
		}
		pending = append(pending, pendingChallenge{dnsName: dnsName, challenge: challenge, keyAuthorization: keyAuthorization, solver: solver})
	}
	run.cert.Status.Order.Challenges = statuses
	if len(pending) == 0 {
		return ctrl.Result{}, nil
	}

	// Each solver publishes its own challenges' responses.
	for _, solver := range distinctSolvers(pending) {
		var own []pendingChallenge
		for _, p := range pending {
			if p.solver == solver {
				own = append(own, p)
			}
		}
		if err := solver.present(ctx, run, own); err != nil {
			return ctrl.Result{}, err
		}
	}
	failed := map[challengeSolver][]string{}
	var firstFailed challengeSolver
	for _, p := range pending {
		status := findChallengeStatus(run.cert.Status.Order.Challenges, p.dnsName)
		checkCtx, cancel := context.WithTimeout(ctx, r.selfCheckTimeout())
		err := p.solver.check(checkCtx, run, p)
		cancel()
		selfChecks.WithLabelValues(p.solver.challengeType(), map[bool]string{true: "success", false: "failure"}[err == nil]).Inc()
		if err != nil {
			if firstFailed == nil {
				firstFailed = p.solver
			}
			failed[p.solver] = append(failed[p.solver], err.Error())
			status.State, status.Reason = "self-check-failed", err.Error()
			continue
		}
		status.State, status.Reason = "presented", ""
		run.accept = append(run.accept, p)
	}
	if firstFailed != nil {
		// Accept nothing until every response is visible: one failed validation fails the order.
		run.accept = nil
		reason, message := firstFailed.notVisible(failed[firstFailed], len(pending))
		return ctrl.Result{}, wait(selfCheckDelay(run), reason, "%s", message)
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

func (r *CertificateReconciler) selfCheckTimeout() time.Duration {
	if r.SelfCheckTimeout == 0 {
		return 10 * time.Second
	}
	return r.SelfCheckTimeout
}

// challengeSolver publishes, checks and removes the responses of one kind of solver.
type challengeSolver interface {
	// challengeType is the ACME challenge type the solver answers.
	challengeType() string
	// present publishes the responses of pending challenges; it is idempotent.
	present(ctx context.Context, run *certificateRun, pending []pendingChallenge) error
	// check verifies that a response is visible as the CA will see it.
	check(ctx context.Context, run *certificateRun, p pendingChallenge) error
	// notVisible is the condition reason and message when some checks failed.
	notVisible(failures []string, pending int) (reason, message string)
	// cleanup removes the responses of challenges (of every type: each solver takes its own).
	cleanup(ctx context.Context, run *certificateRun, challenges []certpilotv1alpha1.ChallengeStatus) error
}

// solverSource says where a solver spec came from: the Secrets and load balancers it names
// are in the Certificate's namespace, or in the issuer's.
type solverSource struct {
	spec       *certpilotv1alpha1.Solver
	fromIssuer bool
}

// solverSpecFor returns the solver of dnsName: the first spec.solvers entry that lists it, else
// spec.solver, else the issuer's. The name is as in spec.dnsNames ("*." for wildcards).
func solverSpecFor(run *certificateRun, dnsName string) (solverSource, bool) {
	for i := range run.cert.Spec.Solvers {
		if slices.Contains(run.cert.Spec.Solvers[i].DNSNames, dnsName) {
			return solverSource{spec: &run.cert.Spec.Solvers[i].Solver}, true
		}
	}
	if run.cert.Spec.Solver != nil {
		return solverSource{spec: run.cert.Spec.Solver}, true
	}
	if run.issuer != nil && run.issuer.GetSpec().Solver != nil {
		return solverSource{spec: run.issuer.GetSpec().Solver, fromIssuer: true}, true
	}
	return solverSource{}, false
}

// solverFor returns the solver of dnsName, or a stalled error when there is none.
func (r *CertificateReconciler) solverFor(run *certificateRun, dnsName string) (challengeSolver, error) {
	source, ok := solverSpecFor(run, dnsName)
	if !ok {
		return nil, stalled("NoSolver", "no solver for %q: neither the Certificate nor its issuer sets one", dnsName)
	}
	return r.challengeSolver(run, source)
}

// challengeSolver returns the implementation of a solver spec; one per spec and reconcile, so
// that challenges of one solver are published together.
func (r *CertificateReconciler) challengeSolver(run *certificateRun, source solverSource) (challengeSolver, error) {
	if cached, ok := run.solvers[source.spec]; ok {
		return cached, nil
	}
	var solver challengeSolver
	spec := source.spec
	switch {
	case spec.TLSALPN01 != nil:
		solver = &loadBalancerSolver{r: r, typ: acme.ChallengeTLSALPN01, source: source}
	case spec.HTTP01 != nil:
		solver = &loadBalancerSolver{r: r, typ: acme.ChallengeHTTP01, source: source}
	case spec.DNS01 != nil && spec.DNS01.RFC2136 != nil:
		solver = &rfc2136Solver{r: r, source: source}
	case spec.DNS01 != nil && spec.DNS01.Manual != nil:
		solver = &manualDNSSolver{r: r, source: source}
	default:
		return nil, stalled("NoSolver", "the solver names no challenge type")
	}
	if run.solvers == nil {
		run.solvers = map[*certpilotv1alpha1.Solver]challengeSolver{}
	}
	run.solvers[spec] = solver
	return solver, nil
}

// allSolvers returns the solvers of every name of the Certificate (for cleanup).
func (r *CertificateReconciler) allSolvers(run *certificateRun) []challengeSolver {
	var solvers []challengeSolver
	for _, name := range run.cert.Spec.DNSNames {
		if solver, err := r.solverFor(run, name); err == nil && !slices.Contains(solvers, solver) {
			solvers = append(solvers, solver)
		}
	}
	return solvers
}

func findChallengeStatus(statuses []certpilotv1alpha1.ChallengeStatus, dnsName string) *certpilotv1alpha1.ChallengeStatus {
	for i := range statuses {
		if strings.EqualFold(statuses[i].DNSName, dnsName) {
			return &statuses[i]
		}
	}
	return nil
}
