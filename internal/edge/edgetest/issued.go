package edgetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certpilot/certpilot/api/v1alpha1"
)

// Issued stores certificate as certpilot stores an issued certificate, so that an edge watching
// namespace serves it: a Certificate name for dnsNames (created when missing) whose
// status.serialNumber records certificate's serial, and its Secret name+"-tls" (created or
// updated), labelled as a certificate Secret and controlled by the Certificate. It writes the
// Secret before the status, as the manager does, and returns the Certificate.
func Issued(ctx context.Context, tb testing.TB, c client.Client, namespace, name string, certificate *tls.Certificate, dnsNames ...string) *v1alpha1.Certificate {
	tb.Helper()
	return IssuedData(ctx, tb, c, namespace, name, map[string][]byte{
		corev1.TLSCertKey: ChainPEM(certificate), corev1.TLSPrivateKeyKey: KeyPEM(tb, certificate),
	}, dnsNames...)
}

// IssuedData is Issued for a certificate Secret's data (tls.crt and tls.key).
func IssuedData(ctx context.Context, tb testing.TB, c client.Client, namespace, name string, data map[string][]byte, dnsNames ...string) *v1alpha1.Certificate {
	tb.Helper()
	block, _ := pem.Decode(data[corev1.TLSCertKey])
	if block == nil {
		tb.Fatal("tls.crt holds no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	cert := &v1alpha1.Certificate{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, cert); apierrors.IsNotFound(err) {
		cert = &v1alpha1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: v1alpha1.CertificateSpec{
				DNSNames: dnsNames, SecretName: name + "-tls",
				IssuerRef: v1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "none"},
			},
		}
		if err := c.Create(ctx, cert); err != nil {
			tb.Fatal(err)
		}
	} else if err != nil {
		tb.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: cert.Spec.SecretName,
			Labels: map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelCertificate: name},
		},
		Type: corev1.SecretTypeTLS,
		Data: data,
	}
	secret.OwnerReferences = []metav1.OwnerReference{ControllerReference(cert)}
	if err := c.Create(ctx, secret); apierrors.IsAlreadyExists(err) {
		if err := c.Update(ctx, secret); err != nil {
			tb.Fatal(err)
		}
	} else if err != nil {
		tb.Fatal(err)
	}
	patch := client.MergeFrom(cert.DeepCopy())
	cert.Status.SerialNumber = fmt.Sprintf("%x", leaf.SerialNumber)
	if err := c.Status().Patch(ctx, cert, patch); err != nil {
		tb.Fatal(err)
	}
	return cert
}

// CertificateSecret returns a kubernetes.io/tls Secret holding certificate, with the labels of
// certpilot's certificate Secret for the Certificate named certificateName (no owner).
func CertificateSecret(namespace, name, certificateName string, certificate *tls.Certificate, tb testing.TB) *corev1.Secret {
	tb.Helper()
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels: map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelCertificate: certificateName},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: ChainPEM(certificate), corev1.TLSPrivateKeyKey: KeyPEM(tb, certificate)},
	}
}

// ControllerReference is the controller owner reference of an object that cert controls.
func ControllerReference(cert *v1alpha1.Certificate) metav1.OwnerReference {
	controller := true
	return metav1.OwnerReference{
		APIVersion: v1alpha1.GroupVersion.String(), Kind: "Certificate", Name: cert.Name, UID: cert.UID, Controller: &controller,
	}
}
