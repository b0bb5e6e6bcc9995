package source

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestIngressTLS: an annotated Ingress with two tls entries gets two Certificates;
// removing an entry deletes its Certificate.
func TestIngressTLS(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	ns := namespace(t, "ingress")
	ingress := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, Annotations: map[string]string{
			AnnotationClusterIssuer: "letsencrypt", AnnotationPrivateKeyAlgorithm: "RSA",
		}},
		Spec: networkingv1.IngressSpec{
			DefaultBackend: &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
				Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}},
			TLS: []networkingv1.IngressTLS{
				{Hosts: []string{"www.example.com", "example.com"}, SecretName: "www-tls"},
				{Hosts: []string{"api.example.com"}, SecretName: "api-tls"},
			},
		},
	}
	if err := k8s.Create(ctx, ingress); err != nil {
		t.Fatal(err)
	}
	waitForCertificates(t, ns, "Ingress", map[string][]string{
		"www-tls": {"www.example.com", "example.com"},
		"api-tls": {"api.example.com"},
	})
	waitForEvent(t, ingress, corev1.EventTypeNormal, reasonCertificateCreated)
	cert := &certpilotv1alpha1.Certificate{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "api-tls"}, cert); err != nil {
		t.Fatal(err)
	}
	if cert.Spec.PrivateKey == nil || cert.Spec.PrivateKey.Algorithm != "RSA" {
		t.Errorf("privateKey %+v, want RSA", cert.Spec.PrivateKey)
	}
	if owner := metav1.GetControllerOf(cert); owner == nil || owner.UID != ingress.UID || owner.Kind != "Ingress" {
		t.Errorf("controller %+v, want the Ingress", owner)
	}

	update(t, ingress, func() { ingress.Spec.TLS = ingress.Spec.TLS[:1] })
	waitForCertificates(t, ns, "Ingress", map[string][]string{"www-tls": {"www.example.com", "example.com"}})
	waitForEvent(t, ingress, corev1.EventTypeNormal, reasonCertificateDeleted)
}
