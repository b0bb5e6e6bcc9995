package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// TestTemplatePatch: the merge patch that brings a certificate Secret to spec.secretTemplate
// sets changed values, removes the keys the template dropped (and only those), and is nil when
// the Secret is up to date.
func TestTemplatePatch(t *testing.T) {
	certWith := func(labels, annotations map[string]string) *certpilotv1alpha1.Certificate {
		cert := &certpilotv1alpha1.Certificate{}
		if labels != nil || annotations != nil {
			cert.Spec.SecretTemplate = &certpilotv1alpha1.SecretTemplate{Labels: labels, Annotations: annotations}
		}
		return cert
	}
	secretWith := func(labels, annotations map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "7", Labels: labels, Annotations: annotations}}
	}
	own := map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue}
	written := func(labels, annotations map[string]string) *corev1.Secret {
		l, a := templateOf(certWith(labels, annotations)).withTemplate(own, map[string]string{annotationOrder: "o"})
		return secretWith(l, a)
	}
	tests := map[string]struct {
		cert   *certpilotv1alpha1.Certificate
		secret *corev1.Secret
		want   string // the patch as JSON; "" for none
	}{
		"no template, a Secret without one": {cert: certWith(nil, nil), secret: written(nil, nil)},
		"a Secret of an earlier version":    {cert: certWith(nil, nil), secret: secretWith(own, nil)},
		"written as the template asks": {cert: certWith(map[string]string{"team": "a"}, map[string]string{"backup": "daily"}),
			secret: written(map[string]string{"team": "a"}, map[string]string{"backup": "daily"})},
		"a label added": {cert: certWith(map[string]string{"team": "a", "tier": "web"}, nil), secret: written(map[string]string{"team": "a"}, nil),
			want: `{"metadata":{"annotations":{"certpilot.dev/secret-template-keys":"labels=team,tier;annotations="},"labels":{"team":"a","tier":"web"},"resourceVersion":"7"}}`},
		"a value changed by someone": {cert: certWith(map[string]string{"team": "a"}, nil),
			secret: func() *corev1.Secret {
				s := written(map[string]string{"team": "a"}, nil)
				s.Labels["team"] = "b"
				return s
			}(),
			want: `{"metadata":{"annotations":{"certpilot.dev/secret-template-keys":"labels=team;annotations="},"labels":{"team":"a"},"resourceVersion":"7"}}`},
		"a key dropped, another's key kept": {cert: certWith(nil, map[string]string{"backup": "daily"}),
			secret: func() *corev1.Secret {
				s := written(map[string]string{"team": "a"}, map[string]string{"backup": "daily"})
				s.Labels["argocd.argoproj.io/instance"] = "x" // someone else's
				return s
			}(),
			want: `{"metadata":{"annotations":{"backup":"daily","certpilot.dev/secret-template-keys":"labels=;annotations=backup"},"labels":{"team":null},"resourceVersion":"7"}}`},
		"the template removed": {cert: certWith(nil, nil), secret: written(map[string]string{"team": "a"}, nil),
			want: `{"metadata":{"annotations":{"certpilot.dev/secret-template-keys":null},"labels":{"team":null},"resourceVersion":"7"}}`},
		"keys the API refuses are left out": {cert: certWith(map[string]string{"team": "a", "bad key": "x", "long": string(make([]byte, 64))}, nil),
			secret: written(map[string]string{"team": "a"}, nil)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			patch := templatePatch(tt.secret, templateOf(tt.cert))
			got := ""
			if patch != nil {
				body, err := json.Marshal(patch)
				if err != nil {
					t.Fatal(err)
				}
				got = string(body)
			}
			if got != tt.want {
				t.Errorf("patch\n  %s\nwant\n  %s", got, tt.want)
			}
		})
	}
}

// TestSecretTemplateOnEnvtest: the template's labels and annotations are in the certificate
// Secret from its create; a changed template is written into the Secret without a new
// certificate, the keys it dropped removed and a key someone else set kept.
func TestSecretTemplateOnEnvtest(t *testing.T) {
	h := newCertificateHarness(t, "template-")
	ctx := context.Background()
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: "tmpl"},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{"tmpl.harness.example"},
			SecretName: "tmpl-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Name: h.issuer.Name},
			SecretTemplate: &certpilotv1alpha1.SecretTemplate{
				Labels:      map[string]string{"team": "a", "tier": "web"},
				Annotations: map[string]string{"backup.example.com/schedule": "daily"},
			},
		},
	}
	create(t, cert)
	secret := h.issue(t, cert)
	if secret.Labels["team"] != "a" || secret.Labels["tier"] != "web" || secret.Annotations["backup.example.com/schedule"] != "daily" ||
		secret.Labels[certpilotv1alpha1.LabelManagedBy] != certpilotv1alpha1.ManagedByValue {
		t.Fatalf("the first certificate Secret: labels %v, annotations %v", secret.Labels, secret.Annotations)
	}
	serial := cert.Status.SerialNumber

	// Someone else labels the Secret; the template drops a label and changes another.
	other := secret.DeepCopy()
	other.Labels["argocd.argoproj.io/instance"] = "apps"
	if err := testKube.Client.Update(ctx, other); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(cert.DeepCopy())
	cert.Spec.SecretTemplate.Labels = map[string]string{"team": "b"}
	if err := testKube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	h.reconcileUntil(t, cert, "the changed template in the Secret", func(error) error {
		s := &corev1.Secret{}
		if err := testKube.Client.Get(ctx, client.ObjectKeyFromObject(secret), s); err != nil {
			return err
		}
		if s.Labels["team"] != "b" {
			return fmt.Errorf("labels %v", s.Labels)
		}
		secret = s
		return nil
	})
	if _, kept := secret.Labels["tier"]; kept {
		t.Errorf("the label the template dropped is still there: %v", secret.Labels)
	}
	if secret.Labels["argocd.argoproj.io/instance"] != "apps" || secret.Annotations["backup.example.com/schedule"] != "daily" {
		t.Errorf("a key the template still lists, or someone else's, was removed: labels %v, annotations %v", secret.Labels, secret.Annotations)
	}
	if err := testKube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
		t.Fatal(err)
	}
	if orders := h.ca.Stats().Orders["tmpl.harness.example"]; cert.Status.SerialNumber != serial || orders != 1 {
		t.Errorf("the template change issued again: serial %s (was %s), %d orders", cert.Status.SerialNumber, serial, orders)
	}
}
