package controllers

import (
	"context"
	"errors"
	"slices"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/solver"
)

var errNoIssuer = errors.New("the Certificate's issuer is not available")

// solverSpecFor returns the solver spec of dnsName and where it came from: the first
// spec.solvers entry that lists it, else spec.solver, else the issuer's. The name is as in
// spec.dnsNames ("*." for wildcards) or spec.ipAddresses.
func solverSpecFor(run *certificateRun, dnsName string) (*certpilotv1alpha1.Solver, solver.Source, bool) {
	cert := run.cert
	own := solver.Source{Issuer: "the Certificate", DefaultNamespace: cert.Namespace, SecretNamespace: cert.Namespace}
	for i := range cert.Spec.Solvers {
		if slices.Contains(cert.Spec.Solvers[i].Names(), dnsName) {
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
func (cs *challengeSteps) solverFor(run *certificateRun, dnsName string) (solver.Solver, error) {
	spec, source, ok := solverSpecFor(run, dnsName)
	if !ok {
		return nil, stalled("NoSolver", "no solver for %q: neither the Certificate nor its issuer sets one", dnsName)
	}
	if cached, ok := run.solvers[spec]; ok {
		return cached, nil
	}
	owner := solver.Owner{Object: run.cert, Namespace: run.cert.Namespace, Name: run.cert.Name}
	for _, name := range run.cert.Spec.Identifiers() {
		if other, _, ok := solverSpecFor(run, name); ok && other == spec {
			source.Names = append(source.Names, name)
		}
	}
	source.Account = func(ctx context.Context) (string, []string, error) { return cs.account(ctx, run) }
	s, err := solver.New(cs.solvers, owner, spec, source)
	if err != nil {
		return nil, err
	}
	if run.solvers == nil {
		run.solvers = map[*certpilotv1alpha1.Solver]solver.Solver{}
	}
	run.solvers[spec] = s
	return s, nil
}

// account returns the issuer's ACME account URL (from its status) and the CA's issuer domain
// names (its directory's caaIdentities), for solvers whose records name them.
func (cs *challengeSteps) account(ctx context.Context, run *certificateRun) (string, []string, error) {
	client, err := issuerClient(ctx, cs.accounts, run)
	if err != nil {
		return "", nil, err
	}
	accountURI := client.AccountURI()
	if run.issuer != nil && run.issuer.GetStatus().AccountURI != "" {
		accountURI = run.issuer.GetStatus().AccountURI
	}
	return accountURI, client.CAAIdentities(), nil
}

// allSolvers returns the solvers of every name of the Certificate (for cleanup).
func (cs *challengeSteps) allSolvers(run *certificateRun) []solver.Solver {
	var solvers []solver.Solver
	for _, name := range run.cert.Spec.Identifiers() {
		if s, err := cs.solverFor(run, name); err == nil && !slices.Contains(solvers, s) {
			solvers = append(solvers, s)
		}
	}
	return solvers
}

// setAutoRenewable records whether renewals need a person: they do when any name's solver
// needs one (dns01 manual).
func (cs *challengeSteps) setAutoRenewable(run *certificateRun) {
	auto, known := true, false
	for _, name := range run.cert.Spec.Identifiers() {
		s, err := cs.solverFor(run, name)
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

// loadBalancerIndex indexes Certificates by the "<namespace>/<name>" of the load balancer
// Deployments their own solvers name, so that a load balancer whose owner changes its opt-in
// annotations wakes the Certificates that wait for it.
const loadBalancerIndex = "spec.solver.loadBalancer"

func loadBalancerKeys(obj client.Object) []string {
	cert := obj.(*certpilotv1alpha1.Certificate)
	specs := []*certpilotv1alpha1.Solver{cert.Spec.Solver}
	for i := range cert.Spec.Solvers {
		specs = append(specs, &cert.Spec.Solvers[i].Solver)
	}
	var keys []string
	for _, spec := range specs {
		var ref *certpilotv1alpha1.LoadBalancerRef
		switch {
		case spec == nil:
		case spec.TLSALPN01 != nil:
			ref = &spec.TLSALPN01.LoadBalancer
		case spec.HTTP01 != nil:
			ref = &spec.HTTP01.LoadBalancer
		}
		if ref == nil {
			continue
		}
		namespace := ref.Namespace
		if namespace == "" {
			namespace = cert.Namespace
		}
		if key := namespace + "/" + ref.Name; !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
	}
	return keys
}

// certificatesUsingLoadBalancer maps a load balancer Deployment to the Certificates whose
// solvers name it.
func certificatesUsingLoadBalancer(reader client.Reader) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		return certificatesByIndex(ctx, reader, loadBalancerIndex, obj.GetNamespace()+"/"+obj.GetName(), "")
	}
}
