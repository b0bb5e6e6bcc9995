package source

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

func newGateway(namespace string, annotations map[string]string, listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: namespace, Annotations: annotations},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: "example", Listeners: listeners},
	}
}

// generatedCertificates returns the dnsNames of the Certificates generated from a source kind in
// namespace, by name.
func generatedCertificates(t *testing.T, namespace, kind string) map[string][]string {
	t.Helper()
	var list certpilotv1alpha1.CertificateList
	if err := k8s.List(context.Background(), &list, client.InNamespace(namespace), client.MatchingLabels{LabelSourceKind: kind}); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, cert := range list.Items {
		got[cert.Name] = cert.Spec.DNSNames
	}
	return got
}

// waitForCertificates waits until the generated Certificates are exactly want (name: dnsNames).
func waitForCertificates(t *testing.T, namespace, kind string, want map[string][]string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("Certificates %v", want), func() error {
		if got := generatedCertificates(t, namespace, kind); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("generated Certificates %v", got)
		}
		return nil
	})
}

// update changes obj with change, retrying on conflicts.
func update(t *testing.T, obj client.Object, change func()) {
	t.Helper()
	eventually(t, 10*time.Second, "update "+obj.GetName(), func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		change()
		return k8s.Update(context.Background(), obj)
	})
}

// TestGatewayListeners: three HTTPS listeners, two sharing a Secret, give exactly two
// Certificates named after the Secrets; renaming a hostname updates the Certificate, removing a
// listener or the annotation deletes what it generated.
func TestGatewayListeners(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	ns := namespace(t, "gateway")
	gateway := newGateway(ns, map[string]string{AnnotationClusterIssuer: "letsencrypt", AnnotationRenewBefore: "720h"},
		listener("a", "a.example.com", "shared-tls"),
		listener("b", "b.example.com", "shared-tls"),
		listener("c", "c.example.com", "c-tls"),
		gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType},
	)
	if err := k8s.Create(ctx, gateway); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, ns, "Gateway", map[string][]string{
		"shared-tls": {"a.example.com", "b.example.com"},
		"c-tls":      {"c.example.com"},
	})
	waitForEvent(t, gateway, corev1.EventTypeNormal, reasonCertificateCreated)

	cert := &certpilotv1alpha1.Certificate{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "c-tls"}, cert); err != nil {
		t.Fatal(err)
	}
	if cert.Spec.SecretName != "c-tls" || cert.Spec.IssuerRef != (certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "letsencrypt"}) ||
		cert.Spec.RenewBefore == nil || cert.Spec.RenewBefore.Duration != 720*time.Hour {
		t.Errorf("spec = %+v", cert.Spec)
	}
	if owner := metav1.GetControllerOf(cert); owner == nil || owner.UID != gateway.UID || owner.Kind != "Gateway" ||
		owner.APIVersion != "gateway.networking.k8s.io/v1" || owner.BlockOwnerDeletion == nil || !*owner.BlockOwnerDeletion {
		t.Errorf("controller owner reference %+v, want the Gateway %s", owner, gateway.UID)
	}
	if cert.Labels[LabelSourceKind] != "Gateway" || cert.Labels[LabelSourceName] != "gw" {
		t.Errorf("labels %v", cert.Labels)
	}
	managers := map[string]metav1.ManagedFieldsOperationType{}
	for _, entry := range cert.ManagedFields {
		managers[entry.Manager] = entry.Operation
	}
	if !reflect.DeepEqual(managers, map[string]metav1.ManagedFieldsOperationType{FieldManager: metav1.ManagedFieldsOperationApply}) {
		t.Errorf("managed fields %v, want only %s applying", managers, FieldManager)
	}
	generation := cert.Generation

	// Renaming a hostname updates the Certificate's dnsNames (the Certificate controller then
	// reissues: DNSNamesChanged; the e2e test sees the new certificate).
	update(t, gateway, func() { gateway.Spec.Listeners[2].Hostname = ptrTo(gatewayv1.Hostname("d.example.com")) })
	waitForCertificates(t, ns, "Gateway", map[string][]string{
		"shared-tls": {"a.example.com", "b.example.com"},
		"c-tls":      {"d.example.com"},
	})
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "c-tls"}, cert); err != nil {
		t.Fatal(err)
	}
	if cert.Generation == generation {
		t.Errorf("generation %d did not change", cert.Generation)
	}
	waitForEvent(t, gateway, corev1.EventTypeNormal, reasonCertificateUpdated)

	// A hand edit of a field certpilot sets is put back (server-side apply with force; what
	// another manager adds beside certpilot's fields, such as a label, stays).
	cert.Spec.IssuerRef.Name = "edited"
	if err := k8s.Update(ctx, cert); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "issuerRef put back", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if cert.Spec.IssuerRef.Name != "letsencrypt" {
			return fmt.Errorf("issuerRef %+v", cert.Spec.IssuerRef)
		}
		return nil
	})

	// Removing the listener deletes its Certificate; a listener of a shared Secret only
	// shrinks the shared one.
	update(t, gateway, func() { gateway.Spec.Listeners = slices.Delete(gateway.Spec.Listeners, 1, 3) })
	waitForCertificates(t, ns, "Gateway", map[string][]string{"shared-tls": {"a.example.com"}})
	waitForEvent(t, gateway, corev1.EventTypeNormal, reasonCertificateDeleted)

	// Removing the annotation deletes the rest.
	update(t, gateway, func() { delete(gateway.Annotations, AnnotationClusterIssuer) })
	waitForCertificates(t, ns, "Gateway", map[string][]string{})
}

// TestGatewayLeavesHandWrittenCertificates: a Certificate of the same name that certpilot did
// not generate is never touched (a Warning on the Gateway says so); once it is deleted the
// generated one takes its place. Hand-written Certificates beside generated ones stay.
func TestGatewayLeavesHandWrittenCertificates(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	ns := namespace(t, "gateway-conflict")
	mine := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "www-tls", Namespace: ns},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames: []string{"mine.example.com"}, SecretName: "www-tls",
			IssuerRef: certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "mine"},
		},
	}
	beside := mine.DeepCopy()
	beside.Name, beside.Spec.SecretName = "beside-tls", "beside-tls"
	for _, cert := range []*certpilotv1alpha1.Certificate{mine, beside} {
		if err := k8s.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
	}
	gateway := newGateway(ns, map[string]string{AnnotationIssuer: "letsencrypt"},
		listener("www", "www.example.com", "www-tls"),
		listener("api", "api.example.com", "api-tls"),
	)
	if err := k8s.Create(ctx, gateway); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, ns, "Gateway", map[string][]string{"api-tls": {"api.example.com"}})
	event := waitForEvent(t, gateway, corev1.EventTypeWarning, reasonCertificateConflict)
	if event.Related == nil || event.Related.Name != "www-tls" {
		t.Errorf("conflict event related %+v, want Certificate www-tls", event.Related)
	}

	got := &certpilotv1alpha1.Certificate{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(mine), got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != mine.ResourceVersion || len(got.OwnerReferences) != 0 || len(got.Labels) != 0 {
		t.Errorf("the hand-written Certificate was touched: resourceVersion %s (was %s), owners %v, labels %v",
			got.ResourceVersion, mine.ResourceVersion, got.OwnerReferences, got.Labels)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(beside), got); err != nil {
		t.Fatalf("the Certificate beside the generated ones: %v", err)
	}

	// Deleting the hand-written one makes way for the generated one.
	if err := k8s.Delete(ctx, mine); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, ns, "Gateway", map[string][]string{"api-tls": {"api.example.com"}, "www-tls": {"www.example.com"}})
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(beside), got); err != nil {
		t.Fatalf("the Certificate beside the generated ones: %v", err)
	}
}

// TestGatewayWildcardNeedsDNS01: a wildcard listener gets no Certificate while the issuer's
// default solver is not dns01 (a Warning says why); once the issuer's solver is dns01 it does.
func TestGatewayWildcardNeedsDNS01(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	ns := namespace(t, "gateway-wildcard")
	issuer := &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "le", Namespace: ns},
		Spec: certpilotv1alpha1.IssuerSpec{
			ACME: certpilotv1alpha1.ACMEIssuer{
				Server:              "https://acme.example.com/directory",
				PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "account"},
			},
			Solver: &certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{
				LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: "edge"}}},
		},
	}
	if err := k8s.Create(ctx, issuer); err != nil {
		t.Fatal(err)
	}
	gateway := newGateway(ns, map[string]string{AnnotationIssuer: "le"},
		listener("wild", "*.example.com", "wild-tls"),
		listener("www", "www.example.com", "www-tls"),
	)
	if err := k8s.Create(ctx, gateway); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, ns, "Gateway", map[string][]string{"www-tls": {"www.example.com"}})
	waitForEvent(t, gateway, corev1.EventTypeWarning, reasonWildcardNeedsDNS01)

	update(t, issuer, func() {
		issuer.Spec.Solver = &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{Manual: &certpilotv1alpha1.ManualDNS01{}}}
	})
	waitForCertificates(t, ns, "Gateway", map[string][]string{"www-tls": {"www.example.com"}, "wild-tls": {"*.example.com"}})
}

// TestGatewayInvalidAnnotation: an annotation that cannot be used is a Warning, and nothing is
// created or deleted until it is fixed.
func TestGatewayInvalidAnnotation(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	ns := namespace(t, "gateway-invalid")
	gateway := newGateway(ns, map[string]string{AnnotationIssuer: "le"}, listener("www", "www.example.com", "www-tls"))
	if err := k8s.Create(ctx, gateway); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, ns, "Gateway", map[string][]string{"www-tls": {"www.example.com"}})
	update(t, gateway, func() {
		gateway.Annotations[AnnotationRenewBefore] = "30d"
		gateway.Spec.Listeners[0].Hostname = ptrTo(gatewayv1.Hostname("new.example.com"))
	})
	waitForEvent(t, gateway, corev1.EventTypeWarning, reasonInvalidAnnotation)
	if got := generatedCertificates(t, ns, "Gateway"); !reflect.DeepEqual(got, map[string][]string{"www-tls": {"www.example.com"}}) {
		t.Errorf("with an invalid annotation the Certificates changed: %v", got)
	}
	update(t, gateway, func() { gateway.Annotations[AnnotationRenewBefore] = "720h" })
	waitForCertificates(t, ns, "Gateway", map[string][]string{"www-tls": {"new.example.com"}})
}

// TestGatewayDeleted: envtest runs no garbage collector, so this
// checks what the collector goes by: every generated Certificate is controlled by the Gateway
// (and a deleted Gateway is not reconciled into new ones).
func TestGatewayDeleted(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	ns := namespace(t, "gateway-deleted")
	gateway := newGateway(ns, map[string]string{AnnotationIssuer: "le"}, listener("www", "www.example.com", "www-tls"))
	if err := k8s.Create(ctx, gateway); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, ns, "Gateway", map[string][]string{"www-tls": {"www.example.com"}})
	if err := k8s.Delete(ctx, gateway); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Gateway gone", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(gateway), gateway); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	cert := &certpilotv1alpha1.Certificate{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "www-tls"}, cert); err != nil {
		t.Fatal(err)
	}
	if owner := metav1.GetControllerOf(cert); owner == nil || owner.UID != gateway.UID {
		t.Errorf("controller %+v, want the deleted Gateway %s (the garbage collector deletes by it)", owner, gateway.UID)
	}
}
