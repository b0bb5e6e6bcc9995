package source

import (
	"context"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// kind is what differs between the Gateway and the Ingress source.
type kind struct {
	// Name is the Kubernetes kind, "Gateway" or "Ingress".
	Name       string
	APIVersion string
	NewObject  func() client.Object
	NewList    func() client.ObjectList
	Items      func(client.ObjectList) []client.Object
	// Entries is the pure reading of the source's spec.
	Entries func(client.Object) ([]tlsEntry, []problem)
}

// Options are what a source reconciler needs from the manager.
type Options struct {
	Client client.Client
	// APIReader reads past the cache, to make sure a Certificate certpilot is about to create
	// is not there already.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	// Controller sets the reconcile workers.
	Controller controller.Options
}

// Reconciler keeps the Certificates of one kind of source (Gateways or Ingresses) as their
// annotations and TLS settings say.
type Reconciler struct {
	Options
	kind kind
}

// Field indexes on the sources, so that a Certificate or an issuer wakes only the sources that
// name it.
const (
	secretNameIndex = "certpilot.dev/secret-names"
	issuerIndex     = "certpilot.dev/issuer"
)

// Reconcile reads the source and syncs its Certificates. A source being deleted is left to the
// garbage collector, which deletes the Certificates it controls.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	src := r.kind.NewObject()
	if err := r.Client.Get(ctx, req.NamespacedName, src); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !src.GetDeletionTimestamp().IsZero() {
		return ctrl.Result{}, nil
	}
	entries, problems := r.kind.Entries(src)
	return ctrl.Result{}, r.sync(ctx, src, entries, problems)
}

// SetupWithManager watches the sources (spec and annotations, not status: a Gateway's
// implementation writes status often), the Certificates named after their Secrets (a generated
// one edited or deleted by hand is put back; a hand-written one deleted makes way for the
// generated one) and the issuers they name (the wildcard rule reads the issuer's solver).
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	indexer := mgr.GetFieldIndexer()
	if err := indexer.IndexField(ctx, r.kind.NewObject(), secretNameIndex, r.secretNames); err != nil {
		return err
	}
	if err := indexer.IndexField(ctx, r.kind.NewObject(), issuerIndex, issuerKeys); err != nil {
		return err
	}
	onSpec := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		Named(strings.ToLower(r.kind.Name)+"-source").
		For(r.kind.NewObject(), builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&certpilotv1alpha1.Certificate{}, handler.EnqueueRequestsFromMapFunc(r.sourcesNamingSecret), onSpec).
		Watches(&certpilotv1alpha1.Issuer{}, handler.EnqueueRequestsFromMapFunc(r.sourcesOfIssuer), onSpec).
		Watches(&certpilotv1alpha1.ClusterIssuer{}, handler.EnqueueRequestsFromMapFunc(r.sourcesOfIssuer), onSpec).
		WithOptions(r.Controller).
		Complete(r)
}

// secretNames indexes an annotated source by the Secrets it wants Certificates for.
func (r *Reconciler) secretNames(obj client.Object) []string {
	if _, annotated, err := parseAnnotations(obj.GetAnnotations()); !annotated || err != nil {
		return nil
	}
	entries, _ := r.kind.Entries(obj)
	var names []string
	for _, block := range groupBySecret(entries) {
		names = append(names, block.SecretName)
	}
	return names
}

// issuerKeys indexes a source by "<kind>/<name>" of its issuer annotation.
func issuerKeys(obj client.Object) []string {
	t, annotated, err := parseAnnotations(obj.GetAnnotations())
	if !annotated || err != nil {
		return nil
	}
	return []string{t.IssuerRef.Kind + "/" + t.IssuerRef.Name}
}

// sourcesNamingSecret maps a Certificate to the sources that control it or want a Certificate
// of its name.
func (r *Reconciler) sourcesNamingSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	requests := r.list(ctx, client.InNamespace(obj.GetNamespace()), client.MatchingFields{secretNameIndex: obj.GetName()})
	if owner := metav1.GetControllerOf(obj); owner != nil && owner.Kind == r.kind.Name && owner.APIVersion == r.kind.APIVersion {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: owner.Name}})
	}
	return requests
}

// sourcesOfIssuer maps an Issuer (its namespace) or a ClusterIssuer (every namespace) to the
// sources that name it.
func (r *Reconciler) sourcesOfIssuer(ctx context.Context, obj client.Object) []reconcile.Request {
	issuer := obj.(certpilotv1alpha1.GenericIssuer)
	opts := []client.ListOption{client.MatchingFields{issuerIndex: issuer.Kind() + "/" + issuer.GetName()}}
	if issuer.GetNamespace() != "" {
		opts = append(opts, client.InNamespace(issuer.GetNamespace()))
	}
	return r.list(ctx, opts...)
}

func (r *Reconciler) list(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	list := r.kind.NewList()
	if err := r.Client.List(ctx, list, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing sources failed", "kind", r.kind.Name)
		return nil
	}
	var requests []reconcile.Request
	for _, src := range r.kind.Items(list) {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(src)})
	}
	return requests
}
