package source

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	fakediscovery "k8s.io/client-go/discovery/fake"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// entry is an HTTPS ListenerSet listener in Terminate mode with one Secret reference.
func entry(name, hostname, secret string) gatewayv1.ListenerEntry {
	l := listener(name, hostname, secret)
	return gatewayv1.ListenerEntry{Name: l.Name, Hostname: l.Hostname, Port: l.Port, Protocol: l.Protocol, TLS: l.TLS}
}

func newListenerSet(namespace, name string, parent client.ObjectKey, annotations map[string]string, listeners ...gatewayv1.ListenerEntry) *gatewayv1.ListenerSet {
	ref := gatewayv1.ParentGatewayReference{Name: gatewayv1.ObjectName(parent.Name)}
	if parent.Namespace != namespace {
		ref.Namespace = ptrTo(gatewayv1.Namespace(parent.Namespace))
	}
	return &gatewayv1.ListenerSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations},
		Spec:       gatewayv1.ListenerSetSpec{ParentRef: ref, Listeners: listeners},
	}
}

func TestListenerSetTLSEntries(t *testing.T) {
	otherNamespace := entry("other", "other.example.com", "x")
	otherNamespace.TLS.CertificateRefs[0].Namespace = ptrTo(gatewayv1.Namespace("infra"))
	listenerSet := newListenerSet("team", "apps", client.ObjectKey{Namespace: "infra", Name: "shared"}, nil,
		entry("www", "www.team.example.com", "www-tls"), otherNamespace, entry("any", "", "any-tls"))
	got, problems := listenerSetTLSEntries(listenerSet)
	want := []tlsEntry{{From: `listener "www"`, SecretName: "www-tls", Hosts: []string{"www.team.example.com"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries = %+v, want %+v", got, want)
	}
	if len(problems) != 1 || problems[0].Reason != reasonUnsupportedRef ||
		!strings.Contains(problems[0].Message, "the ListenerSet's namespace team") {
		t.Errorf("problems = %+v, want one %s naming the ListenerSet's namespace", problems, reasonUnsupportedRef)
	}
}

func TestParentGateway(t *testing.T) {
	for name, tc := range map[string]struct {
		ref    gatewayv1.ParentGatewayReference
		want   client.ObjectKey
		wantOK bool
	}{
		"same namespace":  {ref: gatewayv1.ParentGatewayReference{Name: "gw"}, want: client.ObjectKey{Namespace: "team", Name: "gw"}, wantOK: true},
		"other namespace": {ref: gatewayv1.ParentGatewayReference{Name: "gw", Namespace: ptrTo(gatewayv1.Namespace("infra"))}, want: client.ObjectKey{Namespace: "infra", Name: "gw"}, wantOK: true},
		"explicit group and kind": {ref: gatewayv1.ParentGatewayReference{Name: "gw", Group: ptrTo(gatewayv1.Group(gatewayv1.GroupName)), Kind: ptrTo(gatewayv1.Kind("Gateway"))},
			want: client.ObjectKey{Namespace: "team", Name: "gw"}, wantOK: true},
		"another kind": {ref: gatewayv1.ParentGatewayReference{Name: "gw", Group: ptrTo(gatewayv1.Group("example.com")), Kind: ptrTo(gatewayv1.Kind("Proxy"))}},
	} {
		t.Run(name, func(t *testing.T) {
			listenerSet := &gatewayv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "apps"}, Spec: gatewayv1.ListenerSetSpec{ParentRef: tc.ref}}
			got, ok := parentGateway(listenerSet)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("parentGateway = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestInheritedAnnotations: a ListenerSet's own issuer annotation wins; without one it takes its
// Gateway's, a ClusterIssuer from any namespace and an Issuer only in the Gateway's namespace;
// only the issuer is inherited.
func TestInheritedAnnotations(t *testing.T) {
	gateway := func(namespace string, annotations map[string]string) *gatewayv1.Gateway {
		return &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "shared", Annotations: annotations}}
	}
	for name, tc := range map[string]struct {
		own          map[string]string
		gateway      *gatewayv1.Gateway
		want         map[string]string
		wantProblems []string
	}{
		"own issuer wins": {
			own:     map[string]string{AnnotationIssuer: "team"},
			gateway: gateway("team", map[string]string{AnnotationClusterIssuer: "le", AnnotationRenewBefore: "720h"}),
			want:    map[string]string{AnnotationIssuer: "team"},
		},
		"own cluster issuer wins over the Gateway's Issuer": {
			own:     map[string]string{AnnotationClusterIssuer: "le"},
			gateway: gateway("team", map[string]string{AnnotationIssuer: "gw-issuer"}),
			want:    map[string]string{AnnotationClusterIssuer: "le"},
		},
		"the Gateway's ClusterIssuer, across namespaces, and nothing else of it": {
			own:     map[string]string{AnnotationRenewBefore: "360h"},
			gateway: gateway("infra", map[string]string{AnnotationClusterIssuer: "le", AnnotationRenewBefore: "720h", AnnotationSolver: `{"dns01": {}}`}),
			want:    map[string]string{AnnotationClusterIssuer: "le", AnnotationRenewBefore: "360h"},
		},
		"the Gateway's Issuer in the same namespace": {
			gateway: gateway("team", map[string]string{AnnotationIssuer: "gw-issuer"}),
			want:    map[string]string{AnnotationIssuer: "gw-issuer"},
		},
		"the Gateway's Issuer is another namespace's": {
			own:          map[string]string{AnnotationRenewBefore: "360h"},
			gateway:      gateway("infra", map[string]string{AnnotationIssuer: "gw-issuer"}),
			want:         map[string]string{AnnotationRenewBefore: "360h"},
			wantProblems: []string{reasonIssuerNotInherited},
		},
		"the Gateway sets both": {
			gateway:      gateway("team", map[string]string{AnnotationIssuer: "a", AnnotationClusterIssuer: "b"}),
			wantProblems: []string{reasonIssuerNotInherited},
		},
		"the Gateway's fallback issuers come with its issuer": {
			gateway: gateway("infra", map[string]string{AnnotationClusterIssuer: "le", AnnotationFallbackIssuers: "zerossl"}),
			want:    map[string]string{AnnotationClusterIssuer: "le", AnnotationFallbackIssuers: "zerossl"},
		},
		"the ListenerSet's own fallback issuers win": {
			own:     map[string]string{AnnotationFallbackIssuers: "ClusterIssuer/gts"},
			gateway: gateway("infra", map[string]string{AnnotationClusterIssuer: "le", AnnotationFallbackIssuers: "zerossl"}),
			want:    map[string]string{AnnotationClusterIssuer: "le", AnnotationFallbackIssuers: "ClusterIssuer/gts"},
		},
		"no fallback issuers with the ListenerSet's own issuer": {
			own:     map[string]string{AnnotationClusterIssuer: "mine"},
			gateway: gateway("team", map[string]string{AnnotationClusterIssuer: "le", AnnotationFallbackIssuers: "zerossl"}),
			want:    map[string]string{AnnotationClusterIssuer: "mine"},
		},
		"a fallback Issuer of another namespace": {
			gateway:      gateway("infra", map[string]string{AnnotationClusterIssuer: "le", AnnotationFallbackIssuers: "zerossl, Issuer/internal-ca"}),
			wantProblems: []string{reasonIssuerNotInherited},
		},
		"a fallback Issuer of the same namespace": {
			gateway: gateway("team", map[string]string{AnnotationIssuer: "le", AnnotationFallbackIssuers: "internal-ca"}),
			want:    map[string]string{AnnotationIssuer: "le", AnnotationFallbackIssuers: "internal-ca"},
		},
		"the Gateway has no issuer annotation": {
			own:     map[string]string{AnnotationRenewBefore: "360h"},
			gateway: gateway("team", map[string]string{"other": "x"}),
			want:    map[string]string{AnnotationRenewBefore: "360h"},
		},
		"no parent Gateway": {own: map[string]string{AnnotationRenewBefore: "360h"}, want: map[string]string{AnnotationRenewBefore: "360h"}},
	} {
		t.Run(name, func(t *testing.T) {
			listenerSet := &gatewayv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "apps", Annotations: tc.own}}
			before := fmt.Sprint(tc.own)
			got, problems := inheritedAnnotations(listenerSet, tc.gateway)
			if len(got) != 0 || len(tc.want) != 0 {
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("annotations = %v, want %v", got, tc.want)
				}
			}
			if reasons := problemReasons(problems); !reflect.DeepEqual(reasons, tc.wantProblems) {
				t.Errorf("problems = %+v, want reasons %v", problems, tc.wantProblems)
			}
			if fmt.Sprint(listenerSet.Annotations) != before {
				t.Errorf("the ListenerSet's own annotations were changed: %v", listenerSet.Annotations)
			}
		})
	}
}

func TestGatewayAPIServed(t *testing.T) {
	for name, tc := range map[string]struct {
		resources []string
		ask       []string
		want      bool
	}{
		"gateways served":              {resources: []string{"gatewayclasses", "gateways"}, ask: []string{"gateways"}, want: true},
		"listenersets not served":      {resources: []string{"gatewayclasses", "gateways"}, ask: []string{"gateways", "listenersets"}},
		"listenersets and gateways":    {resources: []string{"gateways", "listenersets"}, ask: []string{"gateways", "listenersets"}, want: true},
		"group version not served":     {ask: []string{"gateways"}},
		"listenersets without gateway": {resources: []string{"listenersets"}, ask: []string{"gateways", "listenersets"}},
	} {
		t.Run(name, func(t *testing.T) {
			fake := &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}
			if tc.resources != nil {
				list := &metav1.APIResourceList{GroupVersion: gatewayv1.GroupVersion.String()}
				for _, resource := range tc.resources {
					list.APIResources = append(list.APIResources, metav1.APIResource{Name: resource})
				}
				fake.Resources = []*metav1.APIResourceList{list}
			}
			var client discovery.DiscoveryInterface = fake
			got, err := gatewayAPIServed(client, tc.ask...)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("served = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestListenerSet: the manager runs without the ListenerSet CRD (the Gateway source works) and
// turns the ListenerSet source on when the CRD is installed, without a restart. A ListenerSet's
// listeners then get Certificates, owned by the ListenerSet, in its namespace, with its issuer
// annotation or else its parent Gateway's; a listener naming a Secret in another namespace is
// refused; the Gateway's annotation changes follow through to the ListenerSets that inherit it.
func TestListenerSet(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	infra := namespace(t, "ls-infra")
	team := namespace(t, "ls-team")

	gateway := newGateway(infra, map[string]string{AnnotationClusterIssuer: "letsencrypt"},
		listener("own", "gw.example.com", "gw-tls"))
	gateway.Spec.AllowedListeners = &gatewayv1.AllowedListeners{Namespaces: &gatewayv1.ListenerNamespaces{From: ptrTo(gatewayv1.NamespacesFromAll)}}
	if err := k8s.Create(ctx, gateway); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, infra, "Gateway", map[string][]string{"gw-tls": {"gw.example.com"}})

	// The first run in a process finds no ListenerSet CRD: the manager started without it and
	// the Gateway source works regardless (above).
	if served, err := gatewayAPIServed(discovery.NewDiscoveryClientForConfigOrDie(kube.Config), "listenersets"); err != nil {
		t.Fatal(err)
	} else if !served {
		t.Log("the ListenerSet CRD is not installed; installing it")
		if err := testenv.InstallListenerSet(ctx, k8s); err != nil {
			t.Fatal(err)
		}
	}

	otherNamespace := entry("elsewhere", "x.team.example.com", "x-tls")
	otherNamespace.TLS.CertificateRefs[0].Namespace = ptrTo(gatewayv1.Namespace(infra))
	inheriting := newListenerSet(team, "apps", client.ObjectKeyFromObject(gateway), map[string]string{AnnotationRenewBefore: "360h"},
		entry("www", "www.team.example.com", "www-tls"), entry("api", "api.team.example.com", "www-tls"), otherNamespace)
	// The CRD is established, but the apiserver may take a moment to serve the kind.
	eventually(t, 30*time.Second, "create the ListenerSet", func() error { return k8s.Create(ctx, inheriting) })
	waitForCertificates(t, team, listenerSetKindName, map[string][]string{"www-tls": {"www.team.example.com", "api.team.example.com"}})
	waitForEvent(t, inheriting, corev1.EventTypeNormal, reasonCertificateCreated)
	waitForEvent(t, inheriting, corev1.EventTypeWarning, reasonUnsupportedRef)

	cert := &certpilotv1alpha1.Certificate{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: team, Name: "www-tls"}, cert); err != nil {
		t.Fatal(err)
	}
	if cert.Spec.IssuerRef != (certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "letsencrypt"}) ||
		cert.Spec.RenewBefore == nil || cert.Spec.RenewBefore.Duration != 360*time.Hour {
		t.Errorf("spec = %+v, want the Gateway's ClusterIssuer and the ListenerSet's renewBefore", cert.Spec)
	}
	if owner := metav1.GetControllerOf(cert); owner == nil || owner.UID != inheriting.UID || owner.Kind != "ListenerSet" ||
		owner.APIVersion != "gateway.networking.k8s.io/v1" || owner.BlockOwnerDeletion == nil || !*owner.BlockOwnerDeletion {
		t.Errorf("controller owner reference %+v, want the ListenerSet %s", owner, inheriting.UID)
	}
	if cert.Labels[LabelSourceKind] != listenerSetKindName || cert.Labels[LabelSourceName] != "apps" {
		t.Errorf("labels %v", cert.Labels)
	}
	if got := generatedCertificates(t, infra, listenerSetKindName); len(got) != 0 {
		t.Errorf("Certificates generated in the Gateway's namespace: %v", got)
	}

	// The ListenerSet's own issuer annotation wins over the Gateway's.
	own := newListenerSet(team, "own", client.ObjectKeyFromObject(gateway), map[string]string{AnnotationIssuer: "team-issuer"},
		entry("shop", "shop.team.example.com", "shop-tls"))
	if err := k8s.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, team, listenerSetKindName, map[string][]string{
		"www-tls":  {"www.team.example.com", "api.team.example.com"},
		"shop-tls": {"shop.team.example.com"},
	})
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: team, Name: "shop-tls"}, cert); err != nil {
		t.Fatal(err)
	}
	if cert.Spec.IssuerRef != (certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "team-issuer"}) {
		t.Errorf("issuerRef = %+v, want the ListenerSet's own Issuer", cert.Spec.IssuerRef)
	}

	// The Gateway's annotation changes: the ListenerSet inheriting it follows, the one with its
	// own does not. A namespaced Issuer is not inherited across namespaces: the inheriting
	// ListenerSet's Certificate goes, with a Warning saying why.
	update(t, gateway, func() { gateway.Annotations[AnnotationClusterIssuer] = "other" })
	eventually(t, 30*time.Second, "the inherited issuer follows the Gateway", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: team, Name: "www-tls"}, cert); err != nil {
			return err
		}
		if cert.Spec.IssuerRef.Name != "other" {
			return fmt.Errorf("issuerRef %+v", cert.Spec.IssuerRef)
		}
		return nil
	})
	update(t, gateway, func() {
		delete(gateway.Annotations, AnnotationClusterIssuer)
		gateway.Annotations[AnnotationIssuer] = "infra-issuer"
	})
	waitForCertificates(t, team, listenerSetKindName, map[string][]string{"shop-tls": {"shop.team.example.com"}})
	waitForEvent(t, inheriting, corev1.EventTypeWarning, reasonIssuerNotInherited)
	waitForCertificates(t, infra, "Gateway", map[string][]string{"gw-tls": {"gw.example.com"}})

	// A ListenerSet in the Gateway's namespace inherits its Issuer.
	local := newListenerSet(infra, "local", client.ObjectKeyFromObject(gateway), nil, entry("docs", "docs.example.com", "docs-tls"))
	if err := k8s.Create(ctx, local); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, infra, listenerSetKindName, map[string][]string{"docs-tls": {"docs.example.com"}})
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: infra, Name: "docs-tls"}, cert); err != nil {
		t.Fatal(err)
	}
	if cert.Spec.IssuerRef != (certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "infra-issuer"}) {
		t.Errorf("issuerRef = %+v, want the Gateway's Issuer", cert.Spec.IssuerRef)
	}
}

// TestListenerSetAnnotationsOutsideWatchedNamespaces: with --watch-namespaces, a parent Gateway
// in a namespace the cache does not hold is not read (the cache would refuse it on every
// reconcile); nothing is inherited and a Warning says why. The ListenerSet's own issuer needs
// no Gateway.
func TestListenerSetAnnotationsOutsideWatchedNamespaces(t *testing.T) {
	r := &Reconciler{Options: Options{Namespaces: []string{"team", "certpilot-system"}}, kind: listenerSetKind}
	parent := client.ObjectKey{Namespace: "infra", Name: "shared"}
	inheriting := newListenerSet("team", "apps", parent, map[string]string{AnnotationRenewBefore: "360h"})
	annotations, problems, err := listenerSetAnnotations(context.Background(), r, inheriting)
	if err != nil {
		t.Fatal(err)
	}
	if hasIssuerAnnotation(annotations) || len(problems) != 1 || problems[0].Reason != reasonIssuerNotInherited ||
		!strings.Contains(problems[0].Message, "--watch-namespaces") {
		t.Errorf("annotations %v, problems %+v; want no issuer and one %s naming --watch-namespaces", annotations, problems, reasonIssuerNotInherited)
	}
	own := newListenerSet("team", "own", parent, map[string]string{AnnotationClusterIssuer: "le"})
	if annotations, problems, err := listenerSetAnnotations(context.Background(), r, own); err != nil || len(problems) != 0 ||
		annotations[AnnotationClusterIssuer] != "le" {
		t.Errorf("own issuer: annotations %v, problems %+v, err %v", annotations, problems, err)
	}
}
