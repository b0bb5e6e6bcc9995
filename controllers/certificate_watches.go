package controllers

import (
	"context"
	"hash/fnv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// What wakes a Certificate: its own changes, the Secrets it owns or names, its issuer, the load
// balancers its solvers name, and the keys made for it in the background.

// SetupWithManager watches Certificates (spec changes and the renew annotation), the Secrets
// they own, their issuers, and the load balancers their solvers name.
func (r *CertificateReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, options controller.Options) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &certpilotv1alpha1.Certificate{}, issuerRefIndex,
		func(obj client.Object) []string {
			var keys []string
			for _, ref := range obj.(*certpilotv1alpha1.Certificate).IssuerRefs() {
				keys = append(keys, issuerKey(ref.Kind, ref.Name))
			}
			return keys
		}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &certpilotv1alpha1.Certificate{}, loadBalancerIndex, loadBalancerKeys); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &certpilotv1alpha1.Certificate{}, secretNameIndex,
		func(obj client.Object) []string {
			return []string{obj.(*certpilotv1alpha1.Certificate).Spec.SecretName}
		}); err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr)
	// A certificate Secret that goes wakes every Certificate that names it: one stalled because
	// another Certificate held it may go on now (its owner is woken by Owns as well).
	b = b.Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(certificatesNamingSecret(r.Client)),
		builder.WithPredicates(predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			UpdateFunc:  func(event.UpdateEvent) bool { return false },
			DeleteFunc:  func(e event.DeleteEvent) bool { return e.Object.GetLabels()[certpilotv1alpha1.LabelCertificate] != "" },
			GenericFunc: func(event.GenericEvent) bool { return false },
		}))
	// A load balancer's owner opting in (or out) wakes the Certificates that name it.
	b = b.Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(certificatesUsingLoadBalancer(r.Client)),
		builder.OnlyMetadata, builder.WithPredicates(predicate.AnnotationChangedPredicate{}))
	// A private key made in the background wakes its Certificate (keyMaker).
	b = b.WatchesRawSource(source.Channel(r.keys.events(), &handler.TypedEnqueueRequestForObject[*certpilotv1alpha1.Certificate]{}))
	return b.
		Named("certificate").
		For(&certpilotv1alpha1.Certificate{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}, builder.WithPredicates(predicate.NewPredicateFuncs(notClaimSecret), r.secretWrites.notEcho())).
		Watches(&certpilotv1alpha1.Issuer{}, issuerChanges(r.Client)).
		Watches(&certpilotv1alpha1.ClusterIssuer{}, issuerChanges(r.Client)).
		WithOptions(options).
		Complete(r)
}

// ownWrites holds the resourceVersion of each Secret this controller created whose watch event
// has not come back yet. That event (the create echoed) wakes nobody: the reconcile that wrote
// the Secret already recorded it, and a reconcile woken by it would find nothing to do (or a
// cache that has not seen the status write yet, and look again). Its zero value is ready to use.
type ownWrites struct{ versions sync.Map }

// remember notes obj's resourceVersion after this controller's write of it.
func (w *ownWrites) remember(obj client.Object) {
	w.versions.Store(types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}, obj.GetResourceVersion())
}

// echo reports whether obj is this controller's own last write coming back through the watch.
// Any event of the Secret ends what is remembered of it: its echo comes once, and a later
// version (someone else's write) or its deletion makes the write old news.
func (w *ownWrites) echo(obj client.Object) bool {
	version, ok := w.versions.LoadAndDelete(types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()})
	return ok && version.(string) == obj.GetResourceVersion()
}

// notEcho lets through every event but the echo of this controller's own write. Deletes always
// pass: whoever deleted the Secret, the Certificate writes it again.
func (w *ownWrites) notEcho() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return !w.echo(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool { return !w.echo(e.ObjectNew) },
		DeleteFunc: func(e event.DeleteEvent) bool { w.echo(e.Object); return true },
	}
}

func issuerKey(kind, name string) string {
	return certpilotv1alpha1.IssuerReference{Kind: kind, Name: name}.KindOrDefault() + "/" + name
}

// certificatesOfIssuer lists the Certificates that name an issuer.
func certificatesOfIssuer(ctx context.Context, reader client.Reader, obj client.Object) []reconcile.Request {
	issuer := obj.(certpilotv1alpha1.GenericIssuer)
	return certificatesByIndex(ctx, reader, issuerRefIndex, issuerKey(issuer.Kind(), issuer.GetName()), issuer.GetNamespace())
}

// certificatesByIndex lists, as requests, the Certificates whose index value is value, in
// namespace ("" for all).
func certificatesByIndex(ctx context.Context, reader client.Reader, index, value, namespace string) []reconcile.Request {
	var list certpilotv1alpha1.CertificateList
	opts := []client.ListOption{client.MatchingFields{index: value}}
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	if err := reader.List(ctx, &list, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing Certificates failed", "index", index, "value", value, "namespace", namespace)
		return nil
	}
	requests := make([]reconcile.Request, 0, len(list.Items))
	for _, cert := range list.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cert)})
	}
	return requests
}

// issuerSpreadWindow bounds how far the Certificates of an issuer whose spec changed are spread
// out: each is looked at once within it (at a moment derived from its name), so that a changed
// server URL reissues every certificate without a burst at the new CA.
const issuerSpreadWindow = 5 * time.Minute

// issuerChanges wakes the Certificates of an issuer: at once when it becomes Ready or stops
// being Ready, spread over issuerSpreadWindow when its spec changed (another server, another
// account: renewal.ShouldIssue decides which need a new certificate).
func issuerChanges(reader client.Reader) handler.EventHandler {
	return handler.Funcs{
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			oldIssuer, okOld := e.ObjectOld.(certpilotv1alpha1.GenericIssuer)
			newIssuer, okNew := e.ObjectNew.(certpilotv1alpha1.GenericIssuer)
			if !okOld || !okNew {
				return
			}
			readyFlipped := meta.IsStatusConditionTrue(oldIssuer.GetStatus().Conditions, certpilotv1alpha1.ConditionReady) !=
				meta.IsStatusConditionTrue(newIssuer.GetStatus().Conditions, certpilotv1alpha1.ConditionReady)
			specChanged := e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration()
			if !readyFlipped && !specChanged {
				return
			}
			requests := certificatesOfIssuer(ctx, reader, e.ObjectNew)
			for _, request := range requests {
				if readyFlipped {
					q.Add(request)
					continue
				}
				q.AddAfter(request, spreadDelay(request.String(), issuerSpreadWindow, len(requests)))
			}
		},
	}
}

// spreadDelay places key in [0, window) by a hash of it, with a window that shrinks to a second
// per hundred objects for small sets (ten Certificates need no five-minute spread).
func spreadDelay(key string, window time.Duration, count int) time.Duration {
	window = min(window, time.Duration(count)*10*time.Millisecond)
	if window <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return time.Duration(h.Sum64() % uint64(window))
}

// certificatesNamingSecret maps a Secret to the Certificates of its namespace whose secretName
// it is.
func certificatesNamingSecret(reader client.Reader) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		return certificatesByIndex(ctx, reader, secretNameIndex, obj.GetName(), obj.GetNamespace())
	}
}
