package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/policy"
)

// setIssuer records the issuer and where the Secrets its solver names live.
func (r *CertificateReconciler) setIssuer(run *certificateRun, issuer certpilotv1alpha1.GenericIssuer) {
	run.issuer = issuer
	run.secretNamespace = r.Accounts.SecretNamespace(issuer)
}

// getIssuer reads one of cert's issuers from the cache.
func (r *CertificateReconciler) getIssuer(ctx context.Context, cert *certpilotv1alpha1.Certificate, ref certpilotv1alpha1.IssuerReference) (certpilotv1alpha1.GenericIssuer, error) {
	var issuer certpilotv1alpha1.GenericIssuer
	key := types.NamespacedName{Name: ref.Name}
	if ref.Kind == "ClusterIssuer" {
		issuer = &certpilotv1alpha1.ClusterIssuer{}
	} else {
		issuer = &certpilotv1alpha1.Issuer{}
		key.Namespace = cert.Namespace
	}
	return issuer, r.Get(ctx, key, issuer)
}

// Reasons of the waits for an issuer.
const (
	// reasonIssuerBusy is the wait of a Certificate whose issuer's gate is full.
	reasonIssuerBusy     = "IssuerBusy"
	reasonIssuerNotFound = "IssuerNotFound"
	reasonIssuerNotReady = "IssuerNotReady"
)

// reasonTooManyNamesForProfile stalls a Certificate with more names than its issuer's ACME
// profile accepts in one order (acme.TooManyIdentifiers).
const reasonTooManyNamesForProfile = "TooManyNamesForProfile"

// resolveIssuer checks the Certificate's issuer (as observed), its solvers, and gets its ACME
// client, before an order is opened. An issuer that does not exist or is not Ready yet is waited for (its watch wakes the
// Certificate); a solver that cannot work is a stalled error.
func (r *CertificateReconciler) resolveIssuer(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	ref := attemptIssuerRef(run.cert)
	issuer, err := run.issuer, run.observed.issuerErr
	if err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, wait(time.Minute, reasonIssuerNotFound, "%s %q does not exist", ref.KindOrDefault(), ref.Name)
		}
		return ctrl.Result{}, err
	}
	if !meta.IsStatusConditionTrue(issuer.GetStatus().Conditions, certpilotv1alpha1.ConditionReady) {
		message := "is not Ready yet"
		if c := meta.FindStatusCondition(issuer.GetStatus().Conditions, certpilotv1alpha1.ConditionReady); c != nil && c.Message != "" {
			message = "is not Ready: " + c.Message
		}
		return ctrl.Result{}, wait(time.Minute, reasonIssuerNotReady, "%s %q %s", issuer.Kind(), ref.Name, message)
	}
	r.setIssuer(run, issuer)

	// The administrator's grant: may this namespace use the issuer for these names? Checked
	// before anything is ordered or published, whatever the solver.
	if decision, err := issuerPolicyDecision(ctx, r.APIReader, issuer, run.cert); err != nil {
		return ctrl.Result{}, err
	} else if !decision.Allowed {
		return ctrl.Result{}, stalled(decision.Reason, "%s", decision.Message)
	}
	// The issuer's profile may accept fewer names per order than the API allows.
	if message := acme.TooManyIdentifiers(issuer.GetSpec().ACME.Profile, len(run.cert.Spec.Identifiers())); message != "" {
		return ctrl.Result{}, stalled(reasonTooManyNamesForProfile, "%s %q: %s", issuer.Kind(), ref.Name, message)
	}
	for _, name := range run.cert.Spec.Identifiers() {
		spec, source, ok := solverSpecFor(run, name)
		if !ok {
			return ctrl.Result{}, stalled("NoSolver", "no solver for %q: neither the Certificate nor %s %q sets one", name, issuer.Kind(), ref.Name)
		}
		if strings.HasPrefix(name, "*.") && spec.DNS01 == nil {
			return ctrl.Result{}, stalled("WildcardNeedsDNS01",
				"%q is a wildcard name, which only the dns01 solver can validate; the solver chosen for it (from %s) is not dns01",
				name, source.Issuer)
		}
		if certpilotv1alpha1.IsIPAddress(name) && spec.DNS01 != nil {
			// Admission refuses this for the Certificate's own solvers; the issuer's is only
			// known here.
			return ctrl.Result{}, stalled("IPAddressNeedsHTTP01OrTLSALPN01",
				"%s is an IP address, which only the http01 and tlsALPN01 solvers can validate (RFC 8738); the solver chosen for it (from %s) is dns01: set spec.solver or a spec.solvers entry for it",
				name, source.Issuer)
		}
	}
	// What each solver can check before an order is opened: the Secrets it reads, the tenant
	// boundary, the probe address. Nothing is written before these pass.
	for _, s := range r.parts().challenges.allSolvers(run) {
		if err := s.Prepare(ctx); err != nil {
			return ctrl.Result{}, err
		}
	}
	r.parts().challenges.setAutoRenewable(run)
	// From here on the reconcile talks to the issuer's CA: take a slot of its gate.
	// Waiters keep their place in the gate's queue, so a Certificate whose request timed out
	// and came straight back does not take the slot of one that waited longer.
	release, ok := r.IssuerGate.TryAcquireFor(issuerKey(issuer.Kind(), issuer.GetNamespace()+"/"+issuer.GetName()),
		run.cert.Namespace+"/"+run.cert.Name)
	if !ok {
		return ctrl.Result{}, wait(acme.GateRetry, reasonIssuerBusy, "Waiting for a free worker of %s %q: its other Certificates hold them all", issuer.Kind(), ref.Name)
	}
	run.releaseIssuer = release
	client, err := r.Accounts.Client(ctx, issuer)
	if err != nil {
		return ctrl.Result{}, err
	}
	run.acme = client
	return ctrl.Result{}, nil
}

// issuerPolicyDecision applies the issuer's policy (internal/policy) to the Certificate: a
// ClusterIssuer with spec.policy reads the Certificate's Namespace (from the API: namespaces are
// not cached) for the labels and the zone annotation administrators set on it.
func issuerPolicyDecision(ctx context.Context, reader client.Reader, issuer certpilotv1alpha1.GenericIssuer,
	cert *certpilotv1alpha1.Certificate) (policy.Decision, error) {
	if issuer.GetNamespace() != "" || issuer.GetSpec().Policy == nil {
		return policy.Decide(policy.InputFor(issuer, nil, cert.Spec.Identifiers())), nil
	}
	namespace := &corev1.Namespace{}
	if err := reader.Get(ctx, types.NamespacedName{Name: cert.Namespace}, namespace); err != nil {
		if !apierrors.IsNotFound(err) {
			return policy.Decision{}, fmt.Errorf("reading Namespace %s for the policy of %s %q: %w", cert.Namespace, issuer.Kind(), issuer.GetName(), err)
		}
		namespace = nil
	}
	return policy.Decide(policy.InputFor(issuer, namespace, cert.Spec.Identifiers())), nil
}
