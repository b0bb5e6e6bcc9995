package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
)

// TestStoreCertificateRefusedWrite: the certificate Secret changes between the reconciler's
// read (from its cache) and its write, so the apiserver refuses the write: AlreadyExists for
// the create of a first issuance, Conflict for the apply of a renewal (which carries the cached
// resourceVersion). storeCertificate then reads the API once and decides again, within the same
// reconcile: a Secret certpilot does not own is never written over (Stalled SecretNotOwned, the
// key kept in the claim, and once the Secret is gone the same order's certificate is stored), a
// Secret that holds this order's certificate already is only recorded, and a Secret someone
// else merely annotated is written at its new resourceVersion, their annotation kept.
func TestStoreCertificateRefusedWrite(t *testing.T) {
	h := newCertificateHarness(t, "store-")
	ctx := context.Background()

	t.Run("a foreign Secret created since the read", func(t *testing.T) {
		cert := h.newCertificate(t, "foreign")
		name := cert.Spec.SecretName
		foreignData := map[string][]byte{"password": []byte("not certpilot's")}
		h.client.before("create", name, func(ctx context.Context, _ any) {
			foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cert.Namespace, Name: name}, Data: foreignData}
			if err := testKube.Client.Create(ctx, foreign); err != nil {
				t.Errorf("Creating the foreign Secret: %v", err)
			}
		})
		err := h.reconcileUntil(t, cert, "the certificate Secret's create", func(error) error { return h.client.hookRan("create", name) })
		if err != nil {
			t.Fatalf("The reconcile whose create was refused returned %v; want the refusal decided in that reconcile", err)
		}
		if err := stalledCondition(cert, "SecretNotOwned"); err != nil {
			t.Fatalf("After the refused create: %v; conditions: %s", err, describeConditions(cert))
		}
		foreign := getSecret(t, cert.Namespace, name)
		if !maps.EqualFunc(foreign.Data, foreignData, bytes.Equal) || len(foreign.Labels) != 0 || len(foreign.OwnerReferences) != 0 {
			t.Fatalf("The foreign Secret was written over: labels %v, owners %v, data keys %v", foreign.Labels, foreign.OwnerReferences, keysOf(foreign.Data))
		}
		if n := h.client.count("apply", name); n != 0 {
			t.Fatalf("%d applies of the foreign Secret; want none", n)
		}
		claimKey := getSecret(t, cert.Namespace, claimSecretName(name)).Data[corev1.TLSPrivateKeyKey]
		if len(claimKey) == 0 {
			t.Fatal("The claim holds no key after the refused create")
		}

		// Its owner deletes it: the certificate of the same order is stored, with the claim's key.
		if err := testKube.Client.Delete(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		h.reconcileUntil(t, cert, "Ready once the foreign Secret is gone", func(error) error { return readyCondition(cert) })
		secret := getSecret(t, cert.Namespace, name)
		if serial := servedLeaf(t, secret); serial != cert.Status.SerialNumber {
			t.Errorf("The Secret holds serial %s, the status records %s", serial, cert.Status.SerialNumber)
		}
		if !bytes.Equal(secret.Data[corev1.TLSPrivateKeyKey], claimKey) {
			t.Error("The stored key is not the key the claim held for the order")
		}
		stats := h.ca.Stats()
		if dnsName := cert.Spec.DNSNames[0]; stats.Orders[dnsName] != 1 || stats.Certificates[dnsName] != 1 {
			t.Errorf("The CA saw %d orders and issued %d certificates for %s; want the one order's certificate stored", stats.Orders[dnsName], stats.Certificates[dnsName], dnsName)
		}
	})

	t.Run("this order's certificate stored since the read", func(t *testing.T) {
		cert := h.newCertificate(t, "replica")
		name := cert.Spec.SecretName
		var storedVersion string
		h.client.before("create", name, func(ctx context.Context, obj any) {
			// Another replica (a leader that has not noticed it lost its lease) got there first,
			// with the same order's certificate.
			secret := obj.(*corev1.Secret).DeepCopy()
			if err := testKube.Client.Create(ctx, secret, client.FieldOwner("certpilot-other-replica")); err != nil {
				t.Errorf("Creating the other replica's Secret: %v", err)
			}
			storedVersion = secret.ResourceVersion
		})
		err := h.reconcileUntil(t, cert, "the certificate Secret's create", func(error) error { return h.client.hookRan("create", name) })
		if err != nil {
			t.Fatalf("The reconcile whose create was refused returned %v; want the stored certificate recorded in that reconcile", err)
		}
		if err := readyCondition(cert); err != nil {
			t.Fatalf("After the refused create: %v; conditions: %s", err, describeConditions(cert))
		}
		secret := getSecret(t, cert.Namespace, name)
		if secret.ResourceVersion != storedVersion || h.client.count("apply", name) != 0 {
			t.Errorf("The Secret was written again (resourceVersion %s, the other replica's %s; %d applies)", secret.ResourceVersion, storedVersion, h.client.count("apply", name))
		}
		if serial := servedLeaf(t, secret); serial != cert.Status.SerialNumber {
			t.Errorf("The Secret holds serial %s, the status records %s", serial, cert.Status.SerialNumber)
		}
	})

	t.Run("a Secret annotated by someone else since the read", func(t *testing.T) {
		cert := h.newCertificate(t, "annotated")
		name := cert.Spec.SecretName
		first := servedLeaf(t, h.issue(t, cert))
		err := h.renewPatchedBeforeApply(t, cert, "annotated-1", `{"metadata":{"annotations":{"example.com/synced-by":"reflector"}}}`)
		if err != nil {
			t.Fatalf("The reconcile whose apply was refused returned %v; want it written again at the new resourceVersion", err)
		}
		if err := readyCondition(cert); err != nil {
			t.Fatalf("After the refused apply: %v; conditions: %s", err, describeConditions(cert))
		}
		secret := getSecret(t, cert.Namespace, name)
		serial := servedLeaf(t, secret)
		if serial == first || serial != cert.Status.SerialNumber {
			t.Errorf("The Secret holds serial %s (first %s); the status records %s: want the renewed certificate", serial, first, cert.Status.SerialNumber)
		}
		if got := secret.Annotations["example.com/synced-by"]; got != "reflector" {
			t.Errorf("The other writer's annotation is %q after the renewal; want it kept", got)
		}
		if n := h.client.count("apply", name); n != 2 {
			t.Errorf("%d applies of the Secret; want 2 (the refused one, then one at the new resourceVersion)", n)
		}
		claimKey := getSecret(t, cert.Namespace, claimSecretName(name)).Data[corev1.TLSPrivateKeyKey]
		if !bytes.Equal(secret.Data[corev1.TLSPrivateKeyKey], claimKey) {
			t.Error("The stored key is not the key the claim holds for the renewal")
		}
	})

	t.Run("a Secret taken from certpilot since the read", func(t *testing.T) {
		cert := h.newCertificate(t, "taken")
		name := cert.Spec.SecretName
		first := servedLeaf(t, h.issue(t, cert))
		// Someone takes the Secret over, to manage it by hand.
		err := h.renewPatchedBeforeApply(t, cert, "taken-1", `{"metadata":{"labels":null,"ownerReferences":null}}`)
		if err != nil {
			t.Fatalf("The reconcile whose apply was refused returned %v; want the refusal decided in that reconcile", err)
		}
		if err := stalledCondition(cert, "SecretNotOwned"); err != nil {
			t.Fatalf("After the refused apply: %v; conditions: %s", err, describeConditions(cert))
		}
		secret := getSecret(t, cert.Namespace, name)
		if serial := servedLeaf(t, secret); serial != first || len(secret.Labels) != 0 || len(secret.OwnerReferences) != 0 {
			t.Errorf("The Secret taken over was written over: serial %s (first %s), labels %v, owners %v", serial, first, secret.Labels, secret.OwnerReferences)
		}
		if n := h.client.count("apply", name); n != 1 {
			t.Errorf("%d applies of the Secret; want only the refused one", n)
		}
	})
}

// renewPatchedBeforeApply asks for a renewal of cert (request) and reconciles until the
// certificate Secret's apply, just before which someone else merge-patches the Secret (patch).
// The cache does not see that write before the reconcile ends: only a read of the API after
// the refusal finds it. It returns the error of the reconcile whose apply was refused.
func (h *certificateHarness) renewPatchedBeforeApply(t *testing.T, cert *certpilotv1alpha1.Certificate, request, patch string) error {
	t.Helper()
	name := cert.Spec.SecretName
	h.client.before("apply", name, func(ctx context.Context, _ any) {
		if err := h.client.holdCached(ctx, client.ObjectKey{Namespace: cert.Namespace, Name: name}); err != nil {
			t.Errorf("Holding the cached Secret: %v", err)
		}
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cert.Namespace, Name: name}}
		if err := testKube.Client.Patch(ctx, secret, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Errorf("Patching the Secret %s: %v", patch, err)
		}
	})
	requestRenewal(t, cert, request)
	err := h.reconcileUntil(t, cert, "the renewal's apply", func(error) error { return h.client.hookRan("apply", name) })
	h.client.releaseCached(name)
	return err
}

// TestClaimPatchConflict: the claim changes between the reconciler's read (its cache) and the
// patch that records a renewal's order and key, which carries the resourceVersion read
// (optimistic lock): another replica (a leader that has not noticed it lost its lease) recorded
// its own order and key for that revision there. The apiserver refuses the patch, the other
// replica's key and order are not written over, and the next reconciles read the claim again
// and go on with what it records: that order is issued with that key, and no other order is
// created.
func TestClaimPatchConflict(t *testing.T) {
	h := newCertificateHarness(t, "claim-")
	cert := h.newCertificate(t, "relocked")
	claimName := claimSecretName(cert.Spec.SecretName)
	first := servedLeaf(t, h.issue(t, cert))

	otherKey := newTestKey(t)
	var otherOrder string
	h.client.before("patch", claimName, func(ctx context.Context, _ any) {
		acmeClient, err := h.accounts.Client(ctx, h.issuer)
		if err != nil {
			t.Errorf("The other replica's ACME client: %v", err)
			return
		}
		order, err := acmeClient.CreateOrder(ctx, acme.OrderRequest{Identifiers: cert.Spec.DNSNames})
		if err != nil {
			t.Errorf("The other replica's order: %v", err)
			return
		}
		otherOrder = order.URL
		record, _ := json.Marshal(openOrder{URL: order.URL, DNSNames: cert.Spec.DNSNames, Created: time.Now()})
		claim := &corev1.Secret{}
		if err := testKube.Client.Get(ctx, client.ObjectKey{Namespace: cert.Namespace, Name: claimName}, claim); err != nil {
			t.Errorf("Reading the claim: %v", err)
			return
		}
		base := claim.DeepCopy()
		claim.Annotations[annotationKeyRevision] = nextKeyRevision(cert)
		claim.Annotations[annotationOpenOrder] = string(record)
		claim.Data = map[string][]byte{corev1.TLSPrivateKeyKey: otherKey.pem}
		if err := testKube.Client.Patch(ctx, claim, client.MergeFrom(base), client.FieldOwner("certpilot-other-replica")); err != nil {
			t.Errorf("Writing the other replica's order and key: %v", err)
		}
	})
	requestRenewal(t, cert, "relocked-1")
	err := h.reconcileUntil(t, cert, "the claim patch of the renewal", func(error) error { return h.client.hookRan("patch", claimName) })
	if !apierrors.IsConflict(err) {
		t.Fatalf("The reconcile whose claim patch met another write returned %v; want the apiserver's Conflict", err)
	}
	claim := getSecret(t, cert.Namespace, claimName)
	if !bytes.Equal(claim.Data[corev1.TLSPrivateKeyKey], otherKey.pem) || claimOrderURL(claim) != otherOrder {
		t.Fatalf("The other replica's key and order in the claim were written over (order %s, the other replica's %s)", claimOrderURL(claim), otherOrder)
	}
	dnsName := cert.Spec.DNSNames[0]
	ordersBefore := h.ca.Stats().Orders[dnsName]

	h.reconcileUntil(t, cert, "the renewal is stored", func(error) error {
		if err := readyCondition(cert); err != nil {
			return err
		}
		if cert.Status.SerialNumber == first {
			return errors.New("the first certificate is still recorded")
		}
		return nil
	})
	secret := getSecret(t, cert.Namespace, cert.Spec.SecretName)
	if serial := servedLeaf(t, secret); serial != cert.Status.SerialNumber {
		t.Errorf("The Secret holds serial %s, the status records %s", serial, cert.Status.SerialNumber)
	}
	if got := secret.Annotations[annotationOrder]; got != otherOrder {
		t.Errorf("The Secret holds the certificate of order %s; want the claim's, %s", got, otherOrder)
	}
	if !bytes.Equal(secret.Data[corev1.TLSPrivateKeyKey], otherKey.pem) {
		t.Error("The renewal was not issued with the key the claim holds")
	}
	// The first issuance's, the renewal's refused one, and the other replica's.
	if orders := h.ca.Stats().Orders[dnsName]; orders != ordersBefore || orders != 3 {
		t.Errorf("The CA saw %d orders for %s (%d after the refused patch); want 3, none after the refusal", orders, dnsName, ordersBefore)
	}
}

func keysOf(data map[string][]byte) []string { return slices.Sorted(maps.Keys(data)) }

// TestAnnouncedOnce: a certificate whose status write was refused after the store (a conflict)
// is recorded again by the next reconcile, which must not announce it a second time; a new
// certificate is announced again, and a status that records the certificate ends what is
// remembered.
func TestAnnouncedOnce(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	_, leaf := secretOf(t, validSecret(t, []string{"shop.example.test"}, now))
	recorder := events.NewFakeRecorder(10)
	store := &secretStore{recorder: recorder, announced: &announcements{}}
	issuer := &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "ca"}}
	issuer.Spec.ACME.DisableRenewalInfo = true
	cert := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "shop", UID: "uid-1"}}
	cert.Spec.DNSNames = []string{"shop.example.test"}
	newRun := func() *certificateRun {
		c := cert.DeepCopy()
		c.Status.Order = &certpilotv1alpha1.OrderStatus{URL: "https://ca/order/1",
			Challenges: []certpilotv1alpha1.ChallengeStatus{{DNSName: "shop.example.test", Type: "tls-alpn-01"}}}
		return &certificateRun{cert: c, now: now, issuer: issuer, patchBase: cert.DeepCopy()}
	}
	announcedEvents := func() int {
		n := 0
		for {
			select {
			case <-recorder.Events:
				n++
			default:
				return n
			}
		}
	}

	store.recordIssued(context.Background(), newRun(), leaf, false, true, nil)
	if n := announcedEvents(); n != 1 {
		t.Fatalf("first recording announced %d times, want 1", n)
	}
	// The status write was refused: the next reconcile finds the certificate stored and records
	// it again, from a status that does not hold it.
	store.recordIssued(context.Background(), newRun(), leaf, false, true, nil)
	if n := announcedEvents(); n != 0 {
		t.Errorf("recording the same certificate again announced it %d more times, want 0", n)
	}
	// The status records it now: nothing is remembered any more.
	store.recordIssued(context.Background(), newRun(), leaf, false, false, nil)
	if store.announced.done(cert, fmt.Sprintf("%x", leaf.SerialNumber)) {
		t.Error("a certificate the status records is still remembered as announced")
	}
	// A Certificate of the same name made anew announces its certificate.
	cert.UID = "uid-2"
	store.recordIssued(context.Background(), newRun(), leaf, false, true, nil)
	if n := announcedEvents(); n != 1 {
		t.Errorf("a new Certificate's certificate was announced %d times, want 1", n)
	}
}
