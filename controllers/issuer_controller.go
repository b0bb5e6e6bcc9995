package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
)

// IssuerReconciler keeps the ACME account of an Issuer or ClusterIssuer registered: it creates
// the account key when the Secret is absent, registers (or finds) the account and reports Ready
// with the account URI.
type IssuerReconciler struct {
	client.Client
	Accounts *Accounts
	// ClusterScoped selects ClusterIssuer instead of Issuer.
	ClusterScoped bool
}

func (r *IssuerReconciler) newObject() certpilotv1alpha1.GenericIssuer {
	if r.ClusterScoped {
		return &certpilotv1alpha1.ClusterIssuer{}
	}
	return &certpilotv1alpha1.Issuer{}
}

// issuerStep is one idempotent step of the issuer flow.
type issuerStep func(ctx context.Context, issuer certpilotv1alpha1.GenericIssuer) error

// Reconcile registers the issuer's ACME account.
func (r *IssuerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, err error) {
	issuer := r.newObject()
	if err := r.Get(ctx, req.NamespacedName, issuer); err != nil {
		if apierrors.IsNotFound(err) {
			r.Accounts.Forget(issuer.Kind(), req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	original := issuer.DeepCopyObject().(certpilotv1alpha1.GenericIssuer)

	defer func() {
		status := issuer.GetStatus()
		summarizeIssuer(&status.Conditions, issuer.GetGeneration(), err, "AccountRegistered",
			fmt.Sprintf("ACME account %s is registered", status.AccountURI), time.Now())
		status.ObservedGeneration = issuer.GetGeneration()
		result, err = resultOf(ctx, err)
		if !equality.Semantic.DeepEqual(original.GetStatus(), status) {
			if patchErr := r.Status().Patch(ctx, issuer, client.MergeFrom(original)); patchErr != nil && err == nil {
				err = patchErr
			}
		}
	}()

	for _, step := range []issuerStep{r.ensureAccountKey, r.registerAccount} {
		if err := step(ctx, issuer); err != nil {
			return ctrl.Result{}, err
		}
	}
	// The Secrets an issuer reads are not watched: look again now and then, so a broken account
	// key shows on the issuer and not only on its certificates (a deleted one is replaced by a
	// new key, which registers a new account).
	return ctrl.Result{RequeueAfter: issuerRecheck}, nil
}

// issuerRecheck is how often a Ready issuer is looked at again.
const issuerRecheck = time.Hour

// ensureAccountKey creates the account key Secret when it is absent. An existing Secret is never
// changed, even when its key cannot be read: replacing it would lose the account.
func (r *IssuerReconciler) ensureAccountKey(ctx context.Context, issuer certpilotv1alpha1.GenericIssuer) error {
	namespace := r.Accounts.SecretNamespace(issuer)
	name := issuer.GetSpec().ACME.PrivateKeySecretRef.Name
	existing, err := r.Accounts.ReadSecret(ctx, namespace, name)
	if err != nil || existing != nil {
		return err
	}
	key, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels: map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue},
			Annotations: map[string]string{
				"certpilot.dev/account-of": issuer.Kind() + "/" + issuer.GetName(),
			},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{accountKeyDataKey: keyPEM},
	}
	// No owner reference: deleting an issuer must not delete the account it registered.
	if err := r.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating account key Secret %s/%s: %w", namespace, name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Created ACME account key", "secret", namespace+"/"+name)
	return nil
}

// registerAccount registers the account (or finds the existing one for the key) and records its
// URI. It is skipped when the account is already known for this spec and key.
func (r *IssuerReconciler) registerAccount(ctx context.Context, issuer certpilotv1alpha1.GenericIssuer) error {
	acmeClient, err := r.Accounts.Client(ctx, issuer)
	if err != nil {
		return err
	}
	status := issuer.GetStatus()
	spec := issuer.GetSpec().ACME
	if spec.Profile != "" && !slices.Contains(acmeClient.Profiles(), spec.Profile) {
		return stalled("UnknownProfile", "the ACME server %s offers no profile %q (it offers %v)", spec.Server, spec.Profile, acmeClient.Profiles())
	}
	// Registered already for this spec (and this key: a changed key rebuilds the client).
	if status.AccountURI != "" && status.AccountURI == acmeClient.AccountURI() &&
		status.ObservedGeneration == issuer.GetGeneration() &&
		meta.IsStatusConditionTrue(status.Conditions, certpilotv1alpha1.ConditionReady) {
		return nil
	}
	eab, err := r.Accounts.ExternalAccountBinding(ctx, issuer)
	if err != nil {
		return err
	}
	uri, err := acmeClient.Register(ctx, spec.Email, eab)
	if err != nil {
		if acme.IsPermanent(err) {
			return stalled("RegistrationFailed", "%v", err)
		}
		return err
	}
	if uri != status.AccountURI {
		ctrl.LoggerFrom(ctx).Info("Registered ACME account", "account", uri)
	}
	status.AccountURI = uri
	return nil
}

// SetupWithManager watches Issuers (or ClusterIssuers); status writes do not trigger reconciles.
func (r *IssuerReconciler) SetupWithManager(mgr ctrl.Manager, options controller.Options) error {
	name := "issuer"
	if r.ClusterScoped {
		name = "clusterissuer"
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(name).
		For(r.newObject(), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(options).
		Complete(r)
}
