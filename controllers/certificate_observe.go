package controllers

import (
	"context"
	"crypto/x509"

	corev1 "k8s.io/api/core/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"

	"github.com/certpilot/certpilot/internal/pki"
)

// observed is what a reconcile read of the world around its Certificate, once, before deciding:
// the decision (decideIssuance) and the steps after it read these and never fetch them again.
type observed struct {
	// secret is the certificate Secret when it exists and certpilot owns it; leaf its
	// certificate when it is readable.
	secret *corev1.Secret
	leaf   *x509.Certificate
	// issuerErr is why the issuer could not be read (NotFound, say); when it was, it is
	// certificateRun.issuer.
	issuerErr error
	// servedIssuer is the issuer of the served certificate (servedIssuerRef), nil when it could
	// not be read: certificateRun.issuer itself unless a fallback issuer issued it.
	servedIssuer certpilotv1alpha1.GenericIssuer
	// passwords are the passwords of spec.keystores (certificate_keystores.go).
	passwords keystorePasswords
	// claim is the claim of the secretName as read before an order, when the cache does not
	// hold it as this Certificate's (nil: not read; checkClaimable reads it then).
	claim *claimRead
}

// observe reads the certificate Secret, the claim of its name (before a first order), the
// keystore passwords and the issuer into run. While
// an order is open the cache is trusted for a missing Secret (storing reads the API again
// before writing); before an order, the API is asked, so that a Secret certpilot may not
// overwrite stops the Certificate before anything is ordered. A Secret certpilot may not
// overwrite is the only error.
func (r *CertificateReconciler) observe(ctx context.Context, run *certificateRun) error {
	cert := run.cert
	run.observed.claim = nil
	var claimLookup chan *claimRead
	if claims := r.parts().claims; cert.Status.NotAfter == nil && !orderOpen(cert) && claims.cached(ctx, run) == nil {
		// Before a first order, a claim the cache does not hold as this Certificate's is looked
		// up in the API (checkClaimable judges it), as the certificate Secret is: the two reads
		// go together, not one after the other. A Certificate with a certificate reads its claim
		// only when it issues (checkClaimable).
		claimLookup = make(chan *claimRead, 1)
		go func() { claimLookup <- claims.lookUp(ctx, cert) }()
	}
	secret, err := r.parts().store.certificateSecret(ctx, cert, false, !orderOpen(cert))
	if claimLookup != nil {
		run.observed.claim = <-claimLookup
	}
	if err == nil && secretBehindStatus(cert, secret) {
		// The Secret cache has not seen the certificate this status records as stored: the API
		// has, and deciding on the older one would order a renewal twice.
		secret, err = r.parts().store.certificateSecret(ctx, cert, true, true)
	}
	if err != nil {
		return err
	}
	run.observed.secret, run.observed.leaf = secret, nil
	if secret != nil {
		run.observed.leaf, _ = pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	}
	run.observed.passwords = r.observeKeystorePasswords(ctx, cert)
	r.observeIssuer(ctx, run)
	return nil
}

// observeIssuer reads the issuer of the Certificate's issuance (attemptIssuerRef) and the issuer
// of its served certificate (from the cache) into run, with where the Secrets its solver names
// live, and records whether renewals need a person (autoRenewable).
func (r *CertificateReconciler) observeIssuer(ctx context.Context, run *certificateRun) {
	ref := attemptIssuerRef(run.cert)
	issuer, err := r.getIssuer(ctx, run.cert, ref)
	run.issuer, run.observed.issuerErr, run.observed.servedIssuer = nil, err, nil
	if err == nil {
		r.setIssuer(run, issuer)
		run.observed.servedIssuer = issuer
	}
	if served := servedIssuerRef(run.cert, run.observed.secret); served != ref {
		run.observed.servedIssuer = nil
		if issuer, err := r.getIssuer(ctx, run.cert, served); err == nil {
			run.observed.servedIssuer = issuer
		}
	}
	r.parts().challenges.setAutoRenewable(run)
}
