package controllers

import (
	"context"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// lookupSolver finds the solver (the Certificate's, or its issuer's) as far as it can, for the
// status (autoRenewable) and to clean up challenge responses; resolveIssuer insists.
func (r *CertificateReconciler) lookupSolver(ctx context.Context, run *certificateRun) {
	if issuer, err := r.getIssuer(ctx, run.cert); err == nil {
		run.issuer = issuer
	}
	setAutoRenewable(run)
}

// setAutoRenewable records whether renewals need a person: they do when any name is validated
// by the dns01 manual solver.
func setAutoRenewable(run *certificateRun) {
	auto, known := true, false
	for _, name := range run.cert.Spec.DNSNames {
		source, ok := solverSpecFor(run, name)
		if !ok {
			continue
		}
		known = true
		if source.spec.DNS01 != nil && source.spec.DNS01.Manual != nil {
			auto = false
		}
	}
	if known {
		run.cert.Status.AutoRenewable = ptr.To(auto)
	}
}

func (r *CertificateReconciler) getIssuer(ctx context.Context, cert *certpilotv1alpha1.Certificate) (certpilotv1alpha1.GenericIssuer, error) {
	ref := cert.Spec.IssuerRef
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

// resolveIssuer finds the Certificate's issuer, its solver and its ACME client, before an order
// is opened. An issuer that does not exist or is not Ready yet is waited for (its watch wakes the
// Certificate); a solver that cannot work is a stalled error.
func (r *CertificateReconciler) resolveIssuer(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	ref := run.cert.Spec.IssuerRef
	issuer, err := r.getIssuer(ctx, run.cert)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, wait(time.Minute, "IssuerNotFound", "%s %q does not exist", issuer.Kind(), ref.Name)
		}
		return ctrl.Result{}, err
	}
	if !meta.IsStatusConditionTrue(issuer.GetStatus().Conditions, certpilotv1alpha1.ConditionReady) {
		message := "is not Ready yet"
		if c := meta.FindStatusCondition(issuer.GetStatus().Conditions, certpilotv1alpha1.ConditionReady); c != nil && c.Message != "" {
			message = "is not Ready: " + c.Message
		}
		return ctrl.Result{}, wait(time.Minute, "IssuerNotReady", "%s %q %s", issuer.Kind(), ref.Name, message)
	}
	run.issuer = issuer

	for _, name := range run.cert.Spec.DNSNames {
		source, ok := solverSpecFor(run, name)
		if !ok {
			return ctrl.Result{}, stalled("NoSolver", "no solver for %q: neither the Certificate nor %s %q sets one", name, issuer.Kind(), ref.Name)
		}
		if strings.HasPrefix(name, "*.") && source.spec.DNS01 == nil {
			return ctrl.Result{}, stalled("WildcardNeedsDNS01",
				"%q is a wildcard name, which only the dns01 solver can validate; the solver chosen for it (from %s) is not dns01",
				name, map[bool]string{true: issuer.Kind() + " " + ref.Name, false: "the Certificate"}[source.fromIssuer])
		}
		solver, err := r.challengeSolver(run, source)
		if err != nil {
			return ctrl.Result{}, err
		}
		// Settings a solver can check before an order is opened (a missing TSIG Secret).
		if v, ok := solver.(interface {
			validate(context.Context, *certificateRun) error
		}); ok {
			if err := v.validate(ctx, run); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	setAutoRenewable(run)

	client, err := r.Accounts.Client(ctx, issuer)
	if err != nil {
		return ctrl.Result{}, err
	}
	run.acme = client
	return ctrl.Result{}, nil
}
