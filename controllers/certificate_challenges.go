package controllers

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/solver"
	"github.com/certpilot/certpilot/internal/text"
)

// How long to wait before checking again a challenge response the load balancer does not serve
// yet: it may be reloading, or kubelet may be syncing the Secret volume (up to a minute or two),
// so check soon at first, then back off to a slow poll for a load balancer that never serves it.
const (
	selfCheckRetry    = 5 * time.Second
	selfCheckMaxRetry = 5 * time.Minute
)

// challengeFinalizer keeps a Certificate whose solvers publish responses that would outlive it
// (TXT records in a zone it does not own) until they are removed. It is added before the first
// such response is published and kept while a solver of the Certificate needs it, so that a
// renewal costs no finalizer write; it goes when the Certificate is deleted (after the cleanup)
// or when no solver needs it any more (dropFinalizer in decideIssuance). Whether responses are
// still published is not the finalizer's presence but cleanupPending.
const challengeFinalizer = "certpilot.dev/challenge-cleanup"

// cleanupFailedPrefix starts the Reason of a challenge whose response could not be removed:
// the status's record that a cleanup is still to finish (cleanupPending).
const cleanupFailedPrefix = "Removing the response failed: "

// cleanupPending reports whether the status records a cleanup that failed: responses of its
// order may still be published.
func cleanupPending(status *certpilotv1alpha1.CertificateStatus) bool {
	if status.Order == nil {
		return false
	}
	return slices.ContainsFunc(status.Order.Challenges, func(c certpilotv1alpha1.ChallengeStatus) bool {
		return strings.HasPrefix(c.Reason, cleanupFailedPrefix)
	})
}

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

// challengeSteps publishes the order's challenge responses through their solvers, self-checks
// them, asks the CA to validate them, and removes them when they are no longer needed.
type challengeSteps struct {
	client   client.Client
	accounts *Accounts
	solvers  *solver.Deps
	records  orderRecords
	failures failureReporter
}

// pendingChallenge is a challenge the CA has not been asked to validate yet, with its solver.
type pendingChallenge struct {
	solver.Challenge
	url    string
	solver solver.Solver
}

// presentChallenges publishes a response for every pending authorization and self-checks them
// all, in parallel, within one deadline. Only when every response is really served are the
// challenges accepted: failed validations count against the CA's rate limits.
func (cs *challengeSteps) presentChallenges(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	if run.order.Status != acme.StatusPending {
		return ctrl.Result{}, nil
	}
	statuses, pending, err := cs.pendingChallenges(ctx, run)
	if err != nil {
		return ctrl.Result{}, err
	}
	run.cert.Status.Order.Challenges = statuses
	if err := cs.records.recordOrder(ctx, run); err != nil {
		return ctrl.Result{}, err
	}
	if len(pending) == 0 {
		return ctrl.Result{}, nil
	}

	// Responses that would outlive a Certificate deleted mid-order (TXT records) are removed
	// first: a finalizer, added now and kept for the next orders, holds the deletion until then.
	if slices.ContainsFunc(distinctSolvers(pending), solver.Solver.NeedsFinalizer) {
		if err := kube.SetFinalizer(ctx, cs.client, run.cert, challengeFinalizer, true); err != nil {
			return ctrl.Result{}, err
		}
	}
	for _, s := range distinctSolvers(pending) {
		if err := s.Present(ctx, challengesOf(pending, s)); err != nil {
			return ctrl.Result{}, err
		}
	}
	ctrl.LoggerFrom(ctx).Info("Published challenge responses", "count", len(pending))

	errs := cs.checkAll(ctx, run, pending)
	failed := map[solver.Solver][]string{}
	var firstFailed solver.Solver
	for i, p := range pending {
		status := findChallengeStatus(run.cert.Status.Order.Challenges, p.DNSName)
		selfChecks.WithLabelValues(p.solver.Type(), map[bool]string{true: "success", false: "failure"}[errs[i] == nil]).Inc()
		if errs[i] != nil {
			if firstFailed == nil {
				firstFailed = p.solver
			}
			failed[p.solver] = append(failed[p.solver], errs[i].Error())
			status.State, status.Reason = "self-check-failed", errs[i].Error()
			continue
		}
		status.State, status.Reason = "presented", ""
	}
	if firstFailed != nil {
		// Accept nothing until every response is visible: one failed validation fails the order.
		reason, message := firstFailed.NotVisible(failed[firstFailed], len(pending))
		return ctrl.Result{}, wait(selfCheckDelay(run), reason, "%s", message)
	}
	run.accept = pending
	return ctrl.Result{}, nil
}

// pendingChallenges reads the order's authorizations: the status of each name's challenge, and
// the challenges still to answer with their solvers.
func (cs *challengeSteps) pendingChallenges(ctx context.Context, run *certificateRun) ([]certpilotv1alpha1.ChallengeStatus, []pendingChallenge, error) {
	var statuses []certpilotv1alpha1.ChallengeStatus
	var pending []pendingChallenge
	for _, url := range run.order.AuthzURLs {
		authz, err := run.authorizations.authorization(ctx, run.acme, url)
		if err != nil {
			return nil, nil, err
		}
		dnsName := authz.Name()
		s, err := cs.solverFor(run, dnsName)
		if err != nil {
			return nil, nil, err
		}
		status := certpilotv1alpha1.ChallengeStatus{Type: s.Type(), State: authz.Status}
		status.SetIdentifier(dnsName)
		if authz.Status != acme.StatusPending {
			// valid needs nothing; invalid fails the order, which waitForOrder reports
			statuses = append(statuses, status)
			continue
		}
		challenge, ok := authz.Challenge(s.Type())
		if !ok {
			offered := make([]string, 0, len(authz.Challenges))
			for _, c := range authz.Challenges {
				offered = append(offered, c.Type)
			}
			return nil, nil, cs.failures.recordFailure(ctx, run, true, "ChallengeNotOffered", "the CA offers no %s challenge for %s (it offers %s)",
				s.Type(), dnsName, strings.Join(offered, ", "))
		}
		status.URL, status.State, status.Token = challenge.URL, challenge.Status, challenge.Token
		statuses = append(statuses, status)
		if challenge.Status != acme.StatusPending {
			continue // already accepted; the CA is validating it
		}
		c := solver.Challenge{DNSName: dnsName, Type: s.Type(), Token: challenge.Token, Announced: announced(run, dnsName, challenge.Token),
			Expires: authz.Expires}
		if challenge.Token != "" { // dns-persist-01 has none: its record names the account instead
			if c.KeyAuthorization, err = run.acme.KeyAuthorization(challenge.Token); err != nil {
				return nil, nil, err
			}
		}
		if s.Type() == acme.ChallengeDNSPersist01 {
			if c.AccountURI, c.IssuerDomainNames, err = cs.account(ctx, run); err != nil {
				return nil, nil, err
			}
			// The challenge's issuer-domain-names win over the directory's caaIdentities.
			if names, err := run.acme.DNSPersistIssuerDomainNames(ctx, url); err != nil {
				return nil, nil, err
			} else if len(names) > 0 {
				c.IssuerDomainNames = names
			}
		}
		pending = append(pending, pendingChallenge{Challenge: c, url: challenge.URL, solver: s})
	}
	return statuses, pending, nil
}

// announced reports whether the last written status already showed this challenge (a person
// was told about it then).
func announced(run *certificateRun, dnsName, token string) bool {
	if previous := run.patchBase.Status.Order; previous != nil {
		old := findChallengeStatus(previous.Challenges, dnsName)
		return old != nil && old.Token == token
	}
	return false
}

// checkAll runs the self-checks of every pending challenge at once, all within one deadline, so
// that a slow or unreachable name costs one timeout per reconcile, not one per name.
func (cs *challengeSteps) checkAll(ctx context.Context, run *certificateRun, pending []pendingChallenge) []error {
	// The self-checks dial what the issuer's ACME client may dial, no more (a namespaced
	// Issuer's probe address or name cannot reach an internal service the administrator did not
	// grant).
	ctx = cs.accounts.WithDialPolicy(ctx, run.issuer)
	ctx, cancel := context.WithTimeout(ctx, cs.selfCheckTimeout())
	defer cancel()
	errs := make([]error, len(pending))
	var wg sync.WaitGroup
	for i, p := range pending {
		wg.Go(func() {
			started := time.Now()
			errs[i] = p.solver.Check(ctx, p.Challenge)
			selfCheckDuration.WithLabelValues(p.solver.Type()).Observe(time.Since(started).Seconds())
		})
	}
	wg.Wait()
	return errs
}

// acceptChallenges tells the CA to validate the challenges whose responses passed the
// self-check. One request each; the CA's answer is polled by waitForOrder.
func (cs *challengeSteps) acceptChallenges(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	for _, p := range run.accept {
		if err := run.acme.Accept(ctx, p.url); err != nil {
			if acme.IsPermanent(err) {
				return ctrl.Result{}, cs.failures.recordFailure(ctx, run, true, "AcceptFailed", "%v", err)
			}
			return ctrl.Result{}, err
		}
		if status := findChallengeStatus(run.cert.Status.Order.Challenges, p.DNSName); status != nil {
			status.State = acme.StatusProcessing
		}
	}
	if len(run.accept) > 0 {
		ctrl.LoggerFrom(ctx).Info("Accepted challenges", "count", len(run.accept))
	}
	return ctrl.Result{}, nil
}

// selfCheckTimeout bounds the self-checks of one reconcile.
func (cs *challengeSteps) selfCheckTimeout() time.Duration {
	if cs.solvers.CheckTimeout == 0 {
		return 10 * time.Second
	}
	return cs.solvers.CheckTimeout
}

// distinctSolvers lists the solvers of pending challenges, in order of first use.
func distinctSolvers(pending []pendingChallenge) []solver.Solver {
	var solvers []solver.Solver
	for _, p := range pending {
		if !slices.Contains(solvers, p.solver) {
			solvers = append(solvers, p.solver)
		}
	}
	return solvers
}

func challengesOf(pending []pendingChallenge, s solver.Solver) []solver.Challenge {
	var challenges []solver.Challenge
	for _, p := range pending {
		if p.solver == s {
			challenges = append(challenges, p.Challenge)
		}
	}
	return challenges
}

// removeChallenges deletes the challenge responses of the status's order. The status records
// the outcome, for the reconcile that writes it: a failure marks the order's challenges
// (cleanupFailedPrefix), so that a later reconcile finishes the cleanup (finishCleanup), and a
// success clears that mark. The finalizer stays (challengeFinalizer).
func (cs *challengeSteps) removeChallenges(ctx context.Context, run *certificateRun) error {
	order := run.cert.Status.Order
	if order == nil {
		return nil
	}
	challenges := cs.challengesToClean(ctx, run)
	for _, s := range cs.allSolvers(run) {
		var own []solver.Challenge
		for _, c := range challenges {
			if owner, err := cs.solverFor(run, c.DNSName); err == nil && owner == s {
				own = append(own, c)
			}
		}
		if err := s.CleanUp(ctx, own); err != nil {
			cs.markCleanupFailed(run, err)
			return err
		}
	}
	for i := range order.Challenges {
		if strings.HasPrefix(order.Challenges[i].Reason, cleanupFailedPrefix) {
			order.Challenges[i].Reason = ""
		}
	}
	return nil
}

// markCleanupFailed records in the status that the order's responses may still be published.
// An order whose challenges no status recorded gets one entry per name, so that the mark has a
// place.
func (cs *challengeSteps) markCleanupFailed(run *certificateRun, err error) {
	order := run.cert.Status.Order
	if len(order.Challenges) == 0 {
		order.Challenges = cs.challengesByName(run, order.State)
	}
	for i := range order.Challenges {
		order.Challenges[i].Reason = text.Cut(cleanupFailedPrefix+err.Error(), maxChallengeReason)
	}
}

// challengesByName lists a challenge status per name of the status's order, each of its
// solver's type and in state: for an order whose progress no status write recorded.
func (cs *challengeSteps) challengesByName(run *certificateRun, state string) []certpilotv1alpha1.ChallengeStatus {
	var challenges []certpilotv1alpha1.ChallengeStatus
	for _, name := range run.cert.Status.Order.Identifiers() {
		if s, err := cs.solverFor(run, name); err == nil {
			challenge := certpilotv1alpha1.ChallengeStatus{Type: s.Type(), State: state}
			challenge.SetIdentifier(name)
			challenges = append(challenges, challenge)
		}
	}
	return challenges
}

// tokensRecorded reports whether the status's order is the order at hand and names, for each of
// its names, the challenge of the name's solver with its token.
func (cs *challengeSteps) tokensRecorded(run *certificateRun) bool {
	order := run.cert.Status.Order
	if order == nil || run.order == nil || order.URL != run.order.URL {
		return false
	}
	for _, name := range order.Identifiers() {
		s, err := cs.solverFor(run, name)
		if err != nil {
			return false
		}
		c := findChallengeStatus(order.Challenges, name)
		if c == nil || c.Type != s.Type() || c.Token == "" {
			return false
		}
	}
	return true
}

// maxChallengeReason bounds a challenge's Reason written from an error.
const maxChallengeReason = 1024

// finalizerNeeded reports whether a solver of the Certificate's names publishes responses that
// need the finalizer, or may (a name whose solver is not known now: its issuer is not at hand).
func (cs *challengeSteps) finalizerNeeded(run *certificateRun) bool {
	for _, name := range run.cert.Spec.Identifiers() {
		s, err := cs.solverFor(run, name)
		if err != nil || s.NeedsFinalizer() {
			return true
		}
	}
	return false
}

// challengesToClean lists the challenges whose responses may be published: those in the status
// and, when the order is at hand and the status does not name every name's challenge with its
// token, those the CA lists for it. The CA's list does not depend on a status write having
// landed (a reconcile may read a stale cache); a status that this reconcile filled from the
// CA's authorizations (presentChallenges) needs no second read of them. Key authorizations are
// computed when the issuer's account is at hand (removing a TXT value needs it).
func (cs *challengeSteps) challengesToClean(ctx context.Context, run *certificateRun) []solver.Challenge {
	var challenges []solver.Challenge
	for _, status := range run.cert.Status.Order.Challenges {
		challenges = append(challenges, solver.Challenge{DNSName: status.Identifier(), Type: status.Type, Token: status.Token})
	}
	// The order's names with their solvers' types, for challenges whose progress no status write
	// recorded: enough for responses keyed by name (tls-alpn-01).
	for _, name := range run.cert.Status.Order.Identifiers() {
		if s, err := cs.solverFor(run, name); err == nil {
			challenges = append(challenges, solver.Challenge{DNSName: name, Type: s.Type()})
		}
	}
	if run.order != nil && run.acme != nil && !cs.tokensRecorded(run) {
		for _, url := range run.order.AuthzURLs {
			authz, err := run.acme.GetAuthorization(ctx, url)
			if err != nil {
				continue
			}
			dnsName := authz.Name()
			for _, challenge := range authz.Challenges {
				challenges = append(challenges, solver.Challenge{DNSName: dnsName, Type: challenge.Type, Token: challenge.Token})
			}
		}
	}
	client, err := issuerClient(ctx, cs.accounts, run)
	for i := range challenges {
		if err == nil && challenges[i].Token != "" {
			challenges[i].KeyAuthorization, _ = client.KeyAuthorization(challenges[i].Token)
		}
	}
	return slices.CompactFunc(challenges, solver.Challenge.Same)
}

// issuerClient returns the run's ACME client, or builds it from the issuer (cleanup after the
// issuer stopped being Ready, or on deletion).
func issuerClient(ctx context.Context, accounts *Accounts, run *certificateRun) (*acme.Client, error) {
	if run.acme != nil {
		return run.acme, nil
	}
	if run.issuer == nil {
		return nil, errNoIssuer
	}
	return accounts.Client(ctx, run.issuer)
}

func findChallengeStatus(statuses []certpilotv1alpha1.ChallengeStatus, dnsName string) *certpilotv1alpha1.ChallengeStatus {
	for i := range statuses {
		if strings.EqualFold(statuses[i].Identifier(), dnsName) {
			return &statuses[i]
		}
	}
	return nil
}
