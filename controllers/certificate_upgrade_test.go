package controllers

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
)

// upgradeStage is how far an earlier version (one that kept the pending private key in the
// Secret "<certificate>-certpilot-next-key" and made claims without one) got with an order.
type upgradeStage int

const (
	// stageReady: the order's authorizations are valid and the next-key Secret holds a key for
	// it; the CSR was not sent (the controller stopped in between).
	stageReady upgradeStage = iota
	// stageFinalized: the CSR, signed with the next-key Secret's key, was sent and the CA issued
	// the certificate; nothing was stored yet.
	stageFinalized
	// stageStored: the certificate is in its Secret; the next-key Secret still holds its key
	// (earlier versions did not delete it).
	stageStored
)

// TestUpgradeFromNextKeySecrets: a Certificate left by an earlier version, as it left it (the
// next-key Secret with its label, owner and order annotation; an empty claim; the order in the
// status), is carried on by the current reconciler with no key lost and no second order: an
// order finalized before the upgrade is stored with the next-key Secret's key, byte for byte;
// an order not finalized yet is finalized with a key the claim now holds; a stored certificate
// stays Ready and its renewal is issued with a fresh key kept in the claim. In every case the
// next-key Secret is deleted once a certificate is stored.
func TestUpgradeFromNextKeySecrets(t *testing.T) {
	h := newCertificateHarness(t, "upgrade-")
	tests := map[string]struct {
		stage upgradeStage
		// servesLegacyKey: the certificate stored after the upgrade has the next-key Secret's
		// key; else the claim's.
		servesLegacyKey bool
		// newKey: that key must not be the next-key Secret's (a renewal has a new key).
		newKey bool
	}{
		"an order finalized before the upgrade":     {stage: stageFinalized, servesLegacyKey: true},
		"an order ready, not finalized, before":     {stage: stageReady},
		"a certificate stored before, then renewed": {stage: stageStored, newKey: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cert := h.newCertificate(t, fmt.Sprintf("upgrade-%d", tc.stage))
			dnsName := cert.Spec.DNSNames[0]
			legacyKey, orderURL := h.leaveAsEarlierVersion(t, cert, tc.stage)
			legacyName := cert.Name + certpilotv1alpha1.NextKeySecretSuffix

			h.reconcileUntil(t, cert, "Ready after the upgrade", func(error) error { return readyCondition(cert) })
			if tc.stage == stageStored {
				earlier := getSecret(t, cert.Namespace, cert.Spec.SecretName)
				if got := earlier.Annotations[annotationOrder]; got != orderURL || cert.Status.Order.URL != orderURL {
					t.Fatalf("After the upgrade the Secret holds order %s's certificate, the status records %s; want the earlier version's %s", got, cert.Status.Order.URL, orderURL)
				}
				if orders := h.ca.Stats().Orders[dnsName]; orders != 1 {
					t.Fatalf("The CA saw %d orders; want only the earlier version's", orders)
				}
				requestRenewal(t, cert, "after-upgrade")
				h.reconcileUntil(t, cert, "the renewal is stored", func(error) error {
					if err := readyCondition(cert); err != nil {
						return err
					}
					if cert.Status.Order.URL == orderURL {
						return fmt.Errorf("the status still records the earlier order")
					}
					return nil
				})
			}

			secret := getSecret(t, cert.Namespace, cert.Spec.SecretName)
			if serial := servedLeaf(t, secret); serial != cert.Status.SerialNumber {
				t.Errorf("The Secret holds serial %s, the status records %s", serial, cert.Status.SerialNumber)
			}
			served := secret.Data[corev1.TLSPrivateKeyKey]
			claim := getSecret(t, cert.Namespace, claimSecretName(cert.Spec.SecretName))
			if tc.servesLegacyKey {
				if !bytes.Equal(served, legacyKey) {
					t.Error("The certificate finalized before the upgrade is not stored with the next-key Secret's key, byte for byte")
				}
			} else if !bytes.Equal(served, claim.Data[corev1.TLSPrivateKeyKey]) || claim.Annotations[annotationKeyRevision] != "1" {
				t.Errorf("The claim (key-revision %q) does not hold the key of the certificate stored", claim.Annotations[annotationKeyRevision])
			}
			if tc.newKey && bytes.Equal(served, legacyKey) {
				t.Error("The renewed certificate has the earlier certificate's key; want a new key")
			}
			if cert.Status.Revision != 1 {
				t.Errorf("status.revision is %d; want 1, the first certificate this version stored", cert.Status.Revision)
			}
			err := testKube.Client.Get(context.Background(), client.ObjectKey{Namespace: cert.Namespace, Name: legacyName}, &corev1.Secret{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("The next-key Secret %s after the store: %v; want it deleted", legacyName, err)
			}
			stats := h.ca.Stats()
			wantOrders := 1
			if tc.stage == stageStored {
				wantOrders = 2 // and the renewal
			}
			if stats.Orders[dnsName] != wantOrders || stats.Certificates[dnsName] != wantOrders {
				t.Errorf("The CA saw %d orders and issued %d certificates; want %d of each: the earlier version's order resumed, not replaced",
					stats.Orders[dnsName], stats.Certificates[dnsName], wantOrders)
			}
		})
	}
}

// leaveAsEarlierVersion does, for cert, what an earlier version did up to stage, with the
// issuer's account, and writes what it left in the API: the empty claim, the next-key Secret
// (applied by field manager certpilot, as it was), the certificate Secret at stageStored, and
// the order in the status. It returns the next-key Secret's key and the order's URL, and waits
// until the reconciler's cache holds all of it (as a manager started after the upgrade does
// before its first reconcile).
func (h *certificateHarness) leaveAsEarlierVersion(t *testing.T, cert *certpilotv1alpha1.Certificate, stage upgradeStage) ([]byte, string) {
	t.Helper()
	ctx := context.Background()
	acmeClient, err := h.accounts.Client(ctx, h.issuer)
	if err != nil {
		t.Fatal(err)
	}
	order, err := acmeClient.CreateOrder(ctx, acme.OrderRequest{DNSNames: cert.Spec.DNSNames})
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range order.AuthzURLs {
		authz, err := acmeClient.GetAuthorization(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		challenge, ok := authz.Challenge(acme.ChallengeDNS01)
		if !ok {
			t.Fatalf("Authorization %s offers no dns-01 challenge", url)
		}
		if err := acmeClient.Accept(ctx, challenge.URL); err != nil {
			t.Fatal(err)
		}
	}
	if order, err = acmeClient.GetOrder(ctx, order.URL); err != nil || order.Status != acme.StatusReady {
		t.Fatalf("The earlier version's order: %v, %v; want it ready", order, err)
	}
	key := newTestKey(t)
	if stage >= stageFinalized {
		csr, err := pki.CreateCSR(key.key, cert.Spec.DNSNames)
		if err != nil {
			t.Fatal(err)
		}
		if order, err = acmeClient.Finalize(ctx, order, csr); err != nil || order.Status != acme.StatusValid {
			t.Fatalf("Finalizing the earlier version's order: %v, %v; want it valid", order, err)
		}
	}

	labels := map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue, certpilotv1alpha1.LabelCertificate: cert.Name}
	claim := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: cert.Namespace, Name: claimSecretName(cert.Spec.SecretName), Labels: labels,
			Annotations:     map[string]string{annotationClaimOf: cert.Spec.SecretName},
			OwnerReferences: []metav1.OwnerReference{*ownerReferenceOf(cert)}},
		Type: corev1.SecretTypeOpaque,
	}
	if err := testKube.Client.Create(ctx, claim, client.FieldOwner(FieldManager)); err != nil {
		t.Fatal(err)
	}
	nextKey := corev1ac.Secret(cert.Name+certpilotv1alpha1.NextKeySecretSuffix, cert.Namespace).
		WithType(corev1.SecretTypeOpaque).
		WithLabels(labels).
		WithAnnotations(map[string]string{annotationOrder: order.URL}).
		WithOwnerReferences(ownerReference(cert)).
		WithData(map[string][]byte{corev1.TLSPrivateKeyKey: key.pem})
	if err := testKube.Client.Apply(ctx, nextKey, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	state := acme.StatusProcessing // a valid order stays processing until its certificate is stored
	if stage == stageReady {
		state = acme.StatusReady
	}
	if stage == stageStored {
		state = acme.StatusValid
		chain, err := acmeClient.FetchCertificate(ctx, order.CertURL)
		if err != nil {
			t.Fatal(err)
		}
		chainPEM := pki.EncodeChain(chain)
		secret := corev1ac.Secret(cert.Spec.SecretName, cert.Namespace).
			WithType(corev1.SecretTypeTLS).
			WithLabels(labels).
			WithAnnotations(map[string]string{
				annotationIssuerKind: issuerKind(cert), annotationIssuerName: cert.Spec.IssuerRef.Name, annotationOrder: order.URL,
				annotationRenewed: "false", annotationACMEServer: h.issuer.Spec.ACME.Server, annotationACMEAccount: acmeClient.AccountURI(),
			}).
			WithOwnerReferences(ownerReference(cert)).
			WithData(map[string][]byte{
				corev1.TLSCertKey: chainPEM, corev1.TLSPrivateKeyKey: key.pem,
				corev1.ServiceAccountRootCAKey: pki.EncodeChain(chain[1:]), certpilotv1alpha1.BundleKey: pki.Bundle(key.pem, chainPEM),
			})
		if err := testKube.Client.Apply(ctx, secret, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
	}
	base := cert.DeepCopy()
	cert.Status.ObservedGeneration = cert.Generation
	cert.Status.Order = &certpilotv1alpha1.OrderStatus{URL: order.URL, State: state, DNSNames: cert.Spec.DNSNames}
	if err := testKube.Client.Status().Patch(ctx, cert, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}

	eventually(t, "the reconciler's cache holds what the earlier version left", func() error {
		cached := &certpilotv1alpha1.Certificate{}
		if err := h.cached.Get(ctx, client.ObjectKeyFromObject(cert), cached); err != nil {
			return err
		}
		if cached.Status.Order == nil || cached.Status.Order.URL != order.URL {
			return fmt.Errorf("the cached Certificate does not record order %s", order.URL)
		}
		names := []string{claim.Name, *nextKey.GetName()}
		if stage == stageStored {
			names = append(names, cert.Spec.SecretName)
		}
		for _, name := range names {
			if err := h.cached.Get(ctx, client.ObjectKey{Namespace: cert.Namespace, Name: name}, &corev1.Secret{}); err != nil {
				return err
			}
		}
		return nil
	})
	return key.pem, order.URL
}
