package source

import (
	"context"
	"fmt"
	"maps"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// listenerSetKindName is the kind of gateway.networking.k8s.io/v1 ListenerSets.
const listenerSetKindName = "ListenerSet"

// parentGatewayIndex indexes ListenerSets by their parent Gateway, "<namespace>/<name>", so
// that a Gateway's annotation change wakes the ListenerSets that inherit it.
const parentGatewayIndex = "certpilot.dev/parent-gateway"

// reasonIssuerNotInherited is the Warning on a ListenerSet that has no issuer annotation and
// cannot use its Gateway's.
const reasonIssuerNotInherited = "IssuerNotInherited"

// listenerSetKind is the ListenerSet source: listeners an application team declares outside the
// Gateway (gateway.networking.k8s.io/v1 ListenerSet, Gateway API standard channel since v1.5).
// Its listeners are read like a Gateway's; its issuer annotation is its own, or else its parent
// Gateway's (inheritedAnnotations).
var listenerSetKind = kind{
	Name:       listenerSetKindName,
	APIVersion: gatewayv1.GroupVersion.String(),
	NewObject:  func() client.Object { return &gatewayv1.ListenerSet{} },
	NewList:    func() client.ObjectList { return &gatewayv1.ListenerSetList{} },
	Items: func(list client.ObjectList) []client.Object {
		items := list.(*gatewayv1.ListenerSetList).Items
		objects := make([]client.Object, len(items))
		for i := range items {
			objects[i] = &items[i]
		}
		return objects
	},
	Entries: func(obj client.Object) ([]tlsEntry, []problem) {
		return listenerSetTLSEntries(obj.(*gatewayv1.ListenerSet))
	},
	Annotations:       listenerSetAnnotations,
	Watch:             watchParentGateways,
	SourcesInheriting: listenerSetsInheriting,
}

// NewListenerSetReconciler returns the reconciler of the ListenerSet source.
func NewListenerSetReconciler(options Options) *Reconciler {
	return &Reconciler{Options: options, kind: listenerSetKind}
}

// listenerSetTLSEntries lists the ListenerSet's listeners that ask for a certificate, by the
// rules of a Gateway's (listenerTLSEntries): the Secret must be in the ListenerSet's namespace.
func listenerSetTLSEntries(listenerSet *gatewayv1.ListenerSet) ([]tlsEntry, []problem) {
	listeners := make([]listenerFields, len(listenerSet.Spec.Listeners))
	for i, l := range listenerSet.Spec.Listeners {
		listeners[i] = listenerFields{Name: l.Name, Hostname: l.Hostname, Protocol: l.Protocol, TLS: l.TLS}
	}
	return listenerTLSEntries(listenerSetKindName, listenerSet.Namespace, listeners)
}

// parentGateway is the key of the ListenerSet's parent Gateway; false when its parentRef names
// another kind.
func parentGateway(listenerSet *gatewayv1.ListenerSet) (client.ObjectKey, bool) {
	ref := listenerSet.Spec.ParentRef
	if (ref.Group != nil && *ref.Group != gatewayv1.GroupName) || (ref.Kind != nil && *ref.Kind != "Gateway") || ref.Name == "" {
		return client.ObjectKey{}, false
	}
	key := client.ObjectKey{Namespace: listenerSet.Namespace, Name: string(ref.Name)}
	if ref.Namespace != nil && *ref.Namespace != "" {
		key.Namespace = string(*ref.Namespace)
	}
	return key, true
}

// hasIssuerAnnotation reports whether annotations set either issuer annotation.
func hasIssuerAnnotation(annotations map[string]string) bool {
	_, issuer := annotations[AnnotationIssuer]
	_, clusterIssuer := annotations[AnnotationClusterIssuer]
	return issuer || clusterIssuer
}

// inheritedAnnotations decides which annotations configure a ListenerSet's Certificates, as
// cert-manager's gateway-shim does: its own, and when it sets no issuer annotation, its parent
// Gateway's issuer annotation (gateway nil: no parent Gateway), with the Gateway's fallback
// issuers unless the ListenerSet lists its own. Only the issuers are inherited; the other
// annotations (renew-before, private key, solver) are always the ListenerSet's own. An Issuer
// is namespaced, so a Gateway's Issuer (as issuer or fallback) is inherited only by
// ListenerSets in the Gateway's namespace: elsewhere the same name would be another
// namespace's Issuer, which the Gateway's owner never named.
//
// Inheriting grants nothing a ListenerSet's owner could not ask for by annotating it: the
// ClusterIssuer's policy (docs/tenancy.md) applies to the Certificate's namespace either way.
func inheritedAnnotations(listenerSet *gatewayv1.ListenerSet, gateway *gatewayv1.Gateway) (map[string]string, []problem) {
	own := listenerSet.GetAnnotations()
	if gateway == nil || hasIssuerAnnotation(own) || !hasIssuerAnnotation(gateway.GetAnnotations()) {
		return own, nil
	}
	from := fmt.Sprintf("the parent Gateway %s/%s", gateway.Namespace, gateway.Name)
	refuse := func(format string, args ...any) (map[string]string, []problem) {
		return own, []problem{{Reason: reasonIssuerNotInherited, Message: from + " " + fmt.Sprintf(format, args...) +
			fmt.Sprintf(": set %s or %s on the ListenerSet: no Certificates", AnnotationIssuer, AnnotationClusterIssuer)}}
	}
	issuer, hasIssuer := gateway.Annotations[AnnotationIssuer]
	clusterIssuer, hasClusterIssuer := gateway.Annotations[AnnotationClusterIssuer]
	inherited := map[string]string{}
	ref := certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: strings.TrimSpace(clusterIssuer)}
	switch {
	case hasIssuer && hasClusterIssuer:
		return refuse("sets both %s and %s", AnnotationIssuer, AnnotationClusterIssuer)
	case hasClusterIssuer:
		inherited[AnnotationClusterIssuer] = clusterIssuer
	default:
		inherited[AnnotationIssuer] = issuer
		ref = certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: strings.TrimSpace(issuer)}
	}
	_, ownFallbacks := own[AnnotationFallbackIssuers]
	if fallbacks, ok := gateway.Annotations[AnnotationFallbackIssuers]; ok && !ownFallbacks {
		// A list the Gateway cannot use is reported on the ListenerSet too, by parseAnnotations.
		inherited[AnnotationFallbackIssuers] = fallbacks
		if refs, err := parseFallbackIssuers(gateway.Annotations, ref); err == nil {
			for _, fallback := range refs {
				if fallback.Kind == "Issuer" && gateway.Namespace != listenerSet.Namespace {
					return refuse("lists the fallback Issuer %q, an Issuer of namespace %s, which a ListenerSet in namespace %s cannot use",
						fallback.Name, gateway.Namespace, listenerSet.Namespace)
				}
			}
		}
	}
	if ref.Kind == "Issuer" && gateway.Namespace != listenerSet.Namespace {
		return refuse("names Issuer %q, an Issuer of namespace %s, which a ListenerSet in namespace %s cannot use",
			ref.Name, gateway.Namespace, listenerSet.Namespace)
	}
	merged := maps.Clone(own)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, inherited)
	return merged, nil
}

// listenerSetAnnotations reads the parent Gateway when the ListenerSet needs it (it sets no
// issuer annotation) and decides with inheritedAnnotations. A Gateway in a namespace the manager
// does not watch (--watch-namespaces) cannot be read: nothing is inherited, and a Warning says
// so.
func listenerSetAnnotations(ctx context.Context, r *Reconciler, obj client.Object) (map[string]string, []problem, error) {
	listenerSet := obj.(*gatewayv1.ListenerSet)
	key, ok := parentGateway(listenerSet)
	if hasIssuerAnnotation(listenerSet.Annotations) || !ok {
		return listenerSet.Annotations, nil, nil
	}
	if !r.watches(key.Namespace) {
		return listenerSet.Annotations, []problem{{Reason: reasonIssuerNotInherited, Message: fmt.Sprintf(
			"the parent Gateway %s is in a namespace certpilot does not watch (--watch-namespaces): set %s or %s on the ListenerSet: no Certificates",
			key, AnnotationIssuer, AnnotationClusterIssuer)}}, nil
	}
	gateway := &gatewayv1.Gateway{}
	if err := r.Client.Get(ctx, key, gateway); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("reading the parent Gateway %s of ListenerSet %s/%s: %w", key, listenerSet.Namespace, listenerSet.Name, err)
		}
		gateway = nil
	}
	annotations, problems := inheritedAnnotations(listenerSet, gateway)
	return annotations, problems, nil
}

// watchParentGateways indexes ListenerSets by parent Gateway and wakes them when a Gateway
// appears, goes or changes its annotations.
func watchParentGateways(ctx context.Context, mgr ctrl.Manager, r *Reconciler, b *builder.Builder) (*builder.Builder, error) {
	err := mgr.GetFieldIndexer().IndexField(ctx, &gatewayv1.ListenerSet{}, parentGatewayIndex, func(obj client.Object) []string {
		if key, ok := parentGateway(obj.(*gatewayv1.ListenerSet)); ok {
			return []string{key.String()}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return b.Watches(&gatewayv1.Gateway{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, gateway client.Object) []reconcile.Request {
		return r.list(ctx, client.MatchingFields{parentGatewayIndex: client.ObjectKeyFromObject(gateway).String()})
	}), builder.WithPredicates(predicate.AnnotationChangedPredicate{})), nil
}

// listenerSetsInheriting maps an issuer to the ListenerSets whose parent Gateway names it.
func listenerSetsInheriting(ctx context.Context, r *Reconciler, issuer certpilotv1alpha1.GenericIssuer) []reconcile.Request {
	var gateways gatewayv1.GatewayList
	var opts []client.ListOption
	if issuer.GetNamespace() != "" {
		opts = append(opts, client.InNamespace(issuer.GetNamespace()))
	}
	if err := r.Client.List(ctx, &gateways, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing Gateways failed")
		return nil
	}
	var requests []reconcile.Request
	for i := range gateways.Items {
		t, annotated, err := parseAnnotations(gateways.Items[i].Annotations)
		if !annotated || err != nil || t.IssuerRef.Kind != issuer.Kind() || t.IssuerRef.Name != issuer.GetName() {
			continue
		}
		requests = append(requests, r.list(ctx, client.MatchingFields{parentGatewayIndex: client.ObjectKeyFromObject(&gateways.Items[i]).String()})...)
	}
	return requests
}
