package controllers

import (
	"errors"
	"slices"

	"k8s.io/utils/ptr"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/solver"
)

var errNoIssuer = errors.New("the Certificate's issuer is not available")

// solverSpecFor returns the solver spec of dnsName and where it came from: the first
// spec.solvers entry that lists it, else spec.solver, else the issuer's. The name is as in
// spec.dnsNames ("*." for wildcards).
func solverSpecFor(run *certificateRun, dnsName string) (*certpilotv1alpha1.Solver, solver.Source, bool) {
	cert := run.cert
	own := solver.Source{Issuer: "the Certificate", DefaultNamespace: cert.Namespace, SecretNamespace: cert.Namespace}
	for i := range cert.Spec.Solvers {
		if slices.Contains(cert.Spec.Solvers[i].DNSNames, dnsName) {
			return &cert.Spec.Solvers[i].Solver, own, true
		}
	}
	if cert.Spec.Solver != nil {
		return cert.Spec.Solver, own, true
	}
	if run.issuer != nil && run.issuer.GetSpec().Solver != nil {
		source := solver.Source{
			Issuer:           run.issuer.Kind() + " " + run.issuer.GetName(),
			ClusterIssuer:    run.issuer.GetNamespace() == "",
			DefaultNamespace: cert.Namespace,
			SecretNamespace:  run.secretNamespace,
		}
		if ns := run.issuer.GetNamespace(); ns != "" {
			source.DefaultNamespace = ns
		}
		return run.issuer.GetSpec().Solver, source, true
	}
	return nil, solver.Source{}, false
}

// solverFor returns the solver of dnsName, or a stalled error when there is none. One solver is
// built per spec and reconcile, so that the challenges of one solver are published together.
func (r *CertificateReconciler) solverFor(run *certificateRun, dnsName string) (solver.Solver, error) {
	spec, source, ok := solverSpecFor(run, dnsName)
	if !ok {
		return nil, stalled("NoSolver", "no solver for %q: neither the Certificate nor its issuer sets one", dnsName)
	}
	if cached, ok := run.solvers[spec]; ok {
		return cached, nil
	}
	owner := solver.Owner{Object: run.cert, Namespace: run.cert.Namespace, Name: run.cert.Name}
	s, err := solver.New(r.Solvers, owner, spec, source)
	if err != nil {
		return nil, err
	}
	if run.solvers == nil {
		run.solvers = map[*certpilotv1alpha1.Solver]solver.Solver{}
	}
	run.solvers[spec] = s
	return s, nil
}

// allSolvers returns the solvers of every name of the Certificate (for cleanup).
func (r *CertificateReconciler) allSolvers(run *certificateRun) []solver.Solver {
	var solvers []solver.Solver
	for _, name := range run.cert.Spec.DNSNames {
		if s, err := r.solverFor(run, name); err == nil && !slices.Contains(solvers, s) {
			solvers = append(solvers, s)
		}
	}
	return solvers
}

// setAutoRenewable records whether renewals need a person: they do when any name's solver
// needs one (dns01 manual).
func (r *CertificateReconciler) setAutoRenewable(run *certificateRun) {
	auto, known := true, false
	for _, name := range run.cert.Spec.DNSNames {
		s, err := r.solverFor(run, name)
		if err != nil {
			continue
		}
		known = true
		auto = auto && s.AutoRenewable()
	}
	if known {
		run.cert.Status.AutoRenewable = ptr.To(auto)
	}
}
