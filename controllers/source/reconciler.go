package source

import (
	"context"
	"slices"
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

// kind is what differs between the Gateway, ListenerSet and Ingress sources.
type kind struct {
	// Name is the Kubernetes kind, "Gateway", "ListenerSet" or "Ingress".
	Name       string
	APIVersion string
	NewObject  func() client.Object
	NewList    func() client.ObjectList
	Items      func(client.ObjectList) []client.Object
	// Entries is the pure reading of the source's spec.
	Entries func(client.Object) ([]tlsEntry, []problem)

	// The hooks of a source that may take its issuer annotation from another object (a
	// ListenerSet from its parent Gateway); nil for the others, whose own annotations are all.

	// Annotations returns the annotations that configure the source's Certificates, and the
	// problems met putting them together.
	Annotations func(ctx context.Context, r *Reconciler, obj client.Object) (map[string]string, []problem, error)
	// Watch adds the kind's own indexes and watches (the objects it inherits from).
	Watch func(ctx context.Context, mgr ctrl.Manager, r *Reconciler, b *builder.Builder) (*builder.Builder, error)
	// SourcesInheriting maps an issuer to the sources that use it through inheritance.
	SourcesInheriting func(ctx context.Context, r *Reconciler, issuer certpilotv1alpha1.GenericIssuer) []reconcile.Request
}

// inherits reports whether sources of the kind may take annotations from another object.
func (k kind) inherits() bool { return k.Annotations != nil }

// Options are what a source reconciler needs from the manager.
type Options struct {
	Client client.Client
	// APIReader reads past the cache, to make sure a Certificate certpilot is about to create
	// is not there already.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	// Controller sets the reconcile workers.
	Controller controller.Options
	// Namespaces are the namespaces the manager's cache holds (--watch-namespaces); empty: all.
	Namespaces []string
}

// watches reports whether the manager's cache holds objects of namespace.
func (o Options) watches(namespace string) bool {
	return len(o.Namespaces) == 0 || slices.Contains(o.Namespaces, namespace)
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
	annotations, annotationProblems := src.GetAnnotations(), []problem(nil)
	if r.kind.inherits() {
		var err error
		if annotations, annotationProblems, err = r.kind.Annotations(ctx, r, src); err != nil {
			return ctrl.Result{}, err
		}
	}
	entries, problems := r.kind.Entries(src)
	return ctrl.Result{}, r.sync(ctx, src, annotations, annotationProblems, entries, problems)
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
	b := ctrl.NewControllerManagedBy(mgr).
		Named(strings.ToLower(r.kind.Name)+"-source").
		For(r.kind.NewObject(), builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&certpilotv1alpha1.Certificate{}, handler.EnqueueRequestsFromMapFunc(r.sourcesNamingSecret), onSpec).
		Watches(&certpilotv1alpha1.Issuer{}, handler.EnqueueRequestsFromMapFunc(r.sourcesOfIssuer), onSpec).
		Watches(&certpilotv1alpha1.ClusterIssuer{}, handler.EnqueueRequestsFromMapFunc(r.sourcesOfIssuer), onSpec).
		WithOptions(r.Controller)
	if r.kind.Watch != nil {
		var err error
		if b, err = r.kind.Watch(ctx, mgr, r, b); err != nil {
			return err
		}
	}
	return b.Complete(r)
}

// secretNames indexes an annotated source by the Secrets it wants Certificates for (every
// source of a kind that inherits annotations: whether it is annotated is known only with the
// object it inherits from).
func (r *Reconciler) secretNames(obj client.Object) []string {
	if _, annotated, err := parseAnnotations(obj.GetAnnotations()); (!annotated || err != nil) && !r.kind.inherits() {
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
// sources that name it, or inherit it.
func (r *Reconciler) sourcesOfIssuer(ctx context.Context, obj client.Object) []reconcile.Request {
	issuer := obj.(certpilotv1alpha1.GenericIssuer)
	opts := []client.ListOption{client.MatchingFields{issuerIndex: issuer.Kind() + "/" + issuer.GetName()}}
	if issuer.GetNamespace() != "" {
		opts = append(opts, client.InNamespace(issuer.GetNamespace()))
	}
	requests := r.list(ctx, opts...)
	if r.kind.SourcesInheriting != nil {
		requests = append(requests, r.kind.SourcesInheriting(ctx, r, issuer)...)
	}
	return requests
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
