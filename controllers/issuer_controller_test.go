package controllers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestIssuerCreatesAccountKeyAndRegisters: an Issuer whose account key Secret is absent gets a
// new key in a Secret certpilot labels (without an owner, so deleting the issuer keeps the
// account), an account at the CA and Ready=True. A later spec change keeps key and account.
func TestIssuerCreatesAccountKeyAndRegisters(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	m := startIssuerManager(t)
	namespace := createNamespace(t, "issuer-")

	issuer := &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "pebble", Namespace: namespace},
		Spec:       pebbleIssuerSpec(pebble, "pebble-account"),
	}
	create(t, issuer)
	waitForIssuer(t, issuer, "Issuer Ready", reconciledCondition(issuer, typeReady, metav1.ConditionTrue, "AccountRegistered"))

	accountURI := issuer.Status.AccountURI
	if !strings.HasPrefix(accountURI, "https://"+pebble.ListenAddress+"/") {
		t.Errorf("status.accountURI = %q, want an account at Pebble %s", accountURI, pebble.ListenAddress)
	}
	if ready := condition(t, issuer, typeReady); !strings.Contains(ready.Message, accountURI) {
		t.Errorf("Ready message %q does not name the account %s", ready.Message, accountURI)
	}
	for _, conditionType := range []string{typeReconciling, typeStalled} {
		if c := meta.FindStatusCondition(issuer.Status.Conditions, conditionType); c != nil {
			t.Errorf("a Ready issuer has %s=%s (%s)", conditionType, c.Status, c.Message)
		}
	}
	if got := kstatusOf(t, issuer); got.Status != status.CurrentStatus {
		t.Errorf("kstatus of the Ready issuer = %s (%s), want Current", got.Status, got.Message)
	}

	secret := getSecret(t, namespace, "pebble-account")
	if got := secret.Labels[certpilotv1alpha1.LabelManagedBy]; got != certpilotv1alpha1.ManagedByValue {
		t.Errorf("account key Secret label %s = %q, want %q", certpilotv1alpha1.LabelManagedBy, got, certpilotv1alpha1.ManagedByValue)
	}
	if len(secret.OwnerReferences) != 0 {
		t.Errorf("account key Secret has owner references %+v: deleting the issuer would delete the account key", secret.OwnerReferences)
	}
	key, err := pki.DecodePrivateKey(secret.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatalf("account key Secret key %s does not hold a private key: %v", corev1.TLSPrivateKeyKey, err)
	}

	// Pebble holds that account for that key: registering the key again finds it.
	acmeClient, err := acme.New(ctx, acme.Options{DirectoryURL: pebble.DirectoryURL(), AccountKey: key, CABundle: pebble.CABundle})
	if err != nil {
		t.Fatal(err)
	}
	if uri, err := acmeClient.Register(ctx, "", nil); err != nil || uri != accountURI {
		t.Errorf("registering the Secret's key again at Pebble = %q, %v; want the existing account %s", uri, err, accountURI)
	}

	// A spec change reconciles again: same key, so same account, and the Secret is not written.
	readyBefore := condition(t, issuer, typeReady)
	base := issuer.DeepCopy()
	issuer.Spec.ACME.Email = "security@example.com"
	if err := testKube.Client.Patch(ctx, issuer, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	if issuer.Generation != base.Generation+1 {
		t.Fatalf("generation %d after the spec change, want %d", issuer.Generation, base.Generation+1)
	}
	waitForIssuer(t, issuer, "Issuer Ready for the new generation", reconciledCondition(issuer, typeReady, metav1.ConditionTrue, "AccountRegistered"))
	if issuer.Status.AccountURI != accountURI {
		t.Errorf("status.accountURI changed from %s to %s: the key did not change, so the account must not", accountURI, issuer.Status.AccountURI)
	}
	if readyAfter := condition(t, issuer, typeReady); !readyAfter.LastTransitionTime.Equal(&readyBefore.LastTransitionTime) {
		t.Errorf("Ready lastTransitionTime moved from %s to %s though Ready stayed True", readyBefore.LastTransitionTime, readyAfter.LastTransitionTime)
	}
	after := getSecret(t, namespace, "pebble-account")
	if after.ResourceVersion != secret.ResourceVersion || !bytes.Equal(after.Data[corev1.TLSPrivateKeyKey], secret.Data[corev1.TLSPrivateKeyKey]) {
		t.Errorf("the account key Secret was written again (resourceVersion %s -> %s)", secret.ResourceVersion, after.ResourceVersion)
	}
	if n := m.Issuers.Backoffs(issuer); n != 0 {
		t.Errorf("the reconciler returned an error %d times for a healthy issuer", n)
	}
}

// TestIssuerInvalidAccountKeyStalls: an account key Secret that exists but holds no key is a
// person's problem. The issuer reports it as Stalled, never replaces the Secret (that would
// lose the account) and does not retry in a loop.
func TestIssuerInvalidAccountKeyStalls(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	m := startIssuerManager(t)
	namespace := createNamespace(t, "issuer-")

	garbage := map[string][]byte{corev1.TLSPrivateKeyKey: []byte("-----BEGIN EC PRIVATE KEY-----\nbm90IGEga2V5\n-----END EC PRIVATE KEY-----\n")}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pebble-account", Namespace: namespace},
		Data:       garbage,
	}
	create(t, secret)
	issuer := &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "pebble", Namespace: namespace},
		Spec:       pebbleIssuerSpec(pebble, "pebble-account"),
	}
	create(t, issuer)
	waitForIssuer(t, issuer, "Issuer Stalled", reconciledCondition(issuer, typeStalled, metav1.ConditionTrue, "InvalidAccountKey"))

	ready := condition(t, issuer, typeReady)
	stalledCondition := condition(t, issuer, typeStalled)
	if ready.Status != metav1.ConditionFalse || ready.Reason != "InvalidAccountKey" {
		t.Errorf("Ready = %s/%s, want False/InvalidAccountKey", ready.Status, ready.Reason)
	}
	for _, want := range []string{namespace + "/pebble-account", corev1.TLSPrivateKeyKey, "fix the Secret or delete it"} {
		if !strings.Contains(stalledCondition.Message, want) {
			t.Errorf("Stalled message %q does not contain %q: it must tell the user what to do", stalledCondition.Message, want)
		}
	}
	if c := meta.FindStatusCondition(issuer.Status.Conditions, typeReconciling); c != nil {
		t.Errorf("a stalled issuer has Reconciling=%s", c.Status)
	}
	if issuer.Status.AccountURI != "" {
		t.Errorf("status.accountURI = %q without a usable key", issuer.Status.AccountURI)
	}
	if got := kstatusOf(t, issuer); got.Status != status.FailedStatus {
		t.Errorf("kstatus of the stalled issuer = %s (%s), want Failed", got.Status, got.Message)
	}

	// Another reconcile (a spec change) leaves the Secret alone and the condition as it was.
	base := issuer.DeepCopy()
	issuer.Spec.ACME.Email = "security@example.com"
	if err := testKube.Client.Patch(ctx, issuer, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitForIssuer(t, issuer, "Issuer Stalled for the new generation", reconciledCondition(issuer, typeStalled, metav1.ConditionTrue, "InvalidAccountKey"))
	again := condition(t, issuer, typeStalled)
	if again.Message != stalledCondition.Message || !again.LastTransitionTime.Equal(&stalledCondition.LastTransitionTime) {
		t.Errorf("Stalled changed between reconciles: %q at %s, then %q at %s",
			stalledCondition.Message, stalledCondition.LastTransitionTime, again.Message, again.LastTransitionTime)
	}
	after := getSecret(t, namespace, "pebble-account")
	if after.ResourceVersion != secret.ResourceVersion {
		t.Errorf("the invalid account key Secret was written (resourceVersion %s -> %s): certpilot must never replace an existing key",
			secret.ResourceVersion, after.ResourceVersion)
	}
	if len(after.Data) != len(garbage) || !bytes.Equal(after.Data[corev1.TLSPrivateKeyKey], garbage[corev1.TLSPrivateKeyKey]) {
		t.Errorf("the invalid account key Secret's data changed to %q", after.Data)
	}
	// Stalled is not an error for the rate limiter: no backoff loop, one slow recheck instead.
	if n := m.Issuers.Backoffs(issuer); n != 0 {
		t.Errorf("the reconciler returned an error %d times for a stalled issuer, want 0 (no retry loop)", n)
	}
}

// TestClusterIssuerAccountKeyInClusterResourceNamespace: a ClusterIssuer's account key Secret
// lives in the cluster resource namespace.
func TestClusterIssuerAccountKeyInClusterResourceNamespace(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	m := startIssuerManager(t)

	issuer := &certpilotv1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "pebble-" + m.ClusterResourceNamespace},
		Spec:       pebbleIssuerSpec(pebble, "pebble-cluster-account"),
	}
	create(t, issuer)
	waitForIssuer(t, issuer, "ClusterIssuer Ready", reconciledCondition(issuer, typeReady, metav1.ConditionTrue, "AccountRegistered"))
	if !strings.HasPrefix(issuer.Status.AccountURI, "https://"+pebble.ListenAddress+"/") {
		t.Errorf("status.accountURI = %q, want an account at Pebble", issuer.Status.AccountURI)
	}
	if got := kstatusOf(t, issuer); got.Status != status.CurrentStatus {
		t.Errorf("kstatus of the Ready ClusterIssuer = %s (%s), want Current", got.Status, got.Message)
	}

	secret := getSecret(t, m.ClusterResourceNamespace, "pebble-cluster-account")
	if secret.Labels[certpilotv1alpha1.LabelManagedBy] != certpilotv1alpha1.ManagedByValue || len(secret.OwnerReferences) != 0 {
		t.Errorf("account key Secret labels %v, owners %+v; want managed-by certpilot and no owner", secret.Labels, secret.OwnerReferences)
	}
	if _, err := pki.DecodePrivateKey(secret.Data[corev1.TLSPrivateKeyKey]); err != nil {
		t.Errorf("account key Secret holds no private key: %v", err)
	}
	for _, namespace := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem} {
		err := testKube.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "pebble-cluster-account"}, &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s/pebble-cluster-account: %v, want not found", namespace, err)
		}
	}
	if n := m.ClusterIssuers.Backoffs(issuer); n != 0 {
		t.Errorf("the reconciler returned an error %d times for a healthy ClusterIssuer", n)
	}
}

// TestIssuerExternalAccountBinding: against a CA that requires external account binding, an
// issuer without one stalls with the CA's reason, one whose MAC key Secret is missing stalls
// naming it, and one with the key registers.
func TestIssuerExternalAccountBinding(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	macKey := make([]byte, 32)
	if _, err := rand.Read(macKey); err != nil {
		t.Fatal(err)
	}
	encodedMAC := base64.RawURLEncoding.EncodeToString(macKey)
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{
		ExternalAccountBindingRequired: true,
		ExternalAccountMACKeys:         map[string]string{"kid-1": encodedMAC},
	})
	m := startIssuerManager(t)
	namespace := createNamespace(t, "issuer-")

	issuer := &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "eab", Namespace: namespace},
		Spec:       pebbleIssuerSpec(pebble, "eab-account"),
	}
	create(t, issuer)
	waitForIssuer(t, issuer, "Issuer without EAB Stalled", reconciledCondition(issuer, typeStalled, metav1.ConditionTrue, "RegistrationFailed"))
	if ready := condition(t, issuer, typeReady); ready.Status != metav1.ConditionFalse ||
		!strings.Contains(strings.ToLower(strings.ReplaceAll(ready.Message, " ", "")), "externalaccount") {
		t.Errorf("Ready = %s %q, want False with a message about the required external account binding", ready.Status, ready.Message)
	}
	keyBefore := getSecret(t, namespace, "eab-account")

	// The binding names a Secret that does not exist yet.
	base := issuer.DeepCopy()
	issuer.Spec.ACME.ExternalAccountBinding = &certpilotv1alpha1.ExternalAccountBinding{
		KeyID:        "kid-1",
		KeySecretRef: certpilotv1alpha1.SecretKeySelector{Name: "eab-mac", Key: "secret"},
	}
	if err := testKube.Client.Patch(ctx, issuer, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitForIssuer(t, issuer, "Issuer with a missing EAB Secret Stalled", reconciledCondition(issuer, typeStalled, metav1.ConditionTrue, "MissingEABSecret"))
	if stalledCondition := condition(t, issuer, typeStalled); !strings.Contains(stalledCondition.Message, namespace+"/eab-mac") {
		t.Errorf("Stalled message %q does not name the missing Secret %s/eab-mac", stalledCondition.Message, namespace)
	}

	// With the MAC key in place the account registers. Secrets certpilot does not own are not
	// watched, so a spec change triggers the reconcile.
	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "eab-mac", Namespace: namespace},
		Data:       map[string][]byte{"secret": []byte(encodedMAC)},
	})
	base = issuer.DeepCopy()
	issuer.Spec.ACME.Email = "security@example.com"
	if err := testKube.Client.Patch(ctx, issuer, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitForIssuer(t, issuer, "Issuer with EAB Ready", reconciledCondition(issuer, typeReady, metav1.ConditionTrue, "AccountRegistered"))
	if !strings.HasPrefix(issuer.Status.AccountURI, "https://"+pebble.ListenAddress+"/") {
		t.Errorf("status.accountURI = %q, want an account at Pebble", issuer.Status.AccountURI)
	}
	if c := meta.FindStatusCondition(issuer.Status.Conditions, typeStalled); c != nil {
		t.Errorf("the Ready issuer still has Stalled=%s (%s)", c.Status, c.Message)
	}
	if keyAfter := getSecret(t, namespace, "eab-account"); keyAfter.ResourceVersion != keyBefore.ResourceVersion {
		t.Errorf("the account key Secret was rewritten while the issuer stalled")
	}
	if n := m.Issuers.Backoffs(issuer); n != 0 {
		t.Errorf("the reconciler returned an error %d times; stalled issuers must not be retried by the rate limiter", n)
	}
}

// TestIssuerUnreachableServerBacksOff: a directory URL where nothing listens is a transient
// failure: Ready=False and Reconciling=True naming the URL, the error goes to the rate limiter
// (exponential backoff), the status is written once and Ready never flaps to True. Pointing the
// issuer at a working server then makes it Ready.
func TestIssuerUnreachableServerBacksOff(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	m := startIssuerManager(t)
	namespace := createNamespace(t, "issuer-")
	history := watchIssuers(ctx, t, namespace)

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	unreachable := fmt.Sprintf("https://127.0.0.1:%d/dir", port)
	issuer := &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "unreachable", Namespace: namespace},
		Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
			Server:              unreachable,
			PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "unreachable-account"},
		}},
	}
	create(t, issuer)
	waitForIssuer(t, issuer, "Issuer Reconciling", reconciledCondition(issuer, typeReconciling, metav1.ConditionTrue, reasonError))
	reconciling := condition(t, issuer, typeReconciling)
	if !strings.Contains(reconciling.Message, unreachable) {
		t.Errorf("Reconciling message %q does not name the directory URL %s", reconciling.Message, unreachable)
	}
	if ready := condition(t, issuer, typeReady); ready.Status != metav1.ConditionFalse || ready.Message != reconciling.Message {
		t.Errorf("Ready = %s %q, want False with the same message", ready.Status, ready.Message)
	}
	if c := meta.FindStatusCondition(issuer.Status.Conditions, typeStalled); c != nil {
		t.Errorf("an unreachable server is transient, but Stalled=%s", c.Status)
	}
	if got := kstatusOf(t, issuer); got.Status != status.InProgressStatus {
		t.Errorf("kstatus of the reconciling issuer = %s (%s), want InProgress", got.Status, got.Message)
	}

	// The rate limiter backs the issuer off again and again (5 ms, 10 ms, 20 ms, ...); the
	// reconciler never returns success or a RequeueAfter, and once the cache has caught up with
	// its first status write, failures with the same outcome write nothing.
	waitForBackoffs := func(want int) {
		t.Helper()
		eventually(t, "backoffs", func() error {
			if n := m.Issuers.Backoffs(issuer); n < want {
				return fmt.Errorf("%d backoffs, want at least %d", n, want)
			}
			return nil
		})
	}
	waitForBackoffs(3)
	if err := testKube.Client.Get(ctx, client.ObjectKeyFromObject(issuer), issuer); err != nil {
		t.Fatal(err)
	}
	written := issuer.ResourceVersion
	waitForBackoffs(m.Issuers.Backoffs(issuer) + 3)
	if n := m.Issuers.Forgets(issuer); n != 0 {
		t.Errorf("the rate limiter forgot the failing issuer %d times: the reconciler did not return its error", n)
	}
	if err := testKube.Client.Get(ctx, client.ObjectKeyFromObject(issuer), issuer); err != nil {
		t.Fatal(err)
	}
	if issuer.ResourceVersion != written {
		t.Errorf("the issuer was written again by failures with the same outcome (resourceVersion %s -> %s): %s",
			written, issuer.ResourceVersion, describeStatus(issuer))
	}
	if ready := history.readyTrue(); ready != 0 {
		t.Errorf("Ready was True in %d of the issuer's versions while the server was unreachable", ready)
	}

	// Fixed spec: the issuer recovers, Reconciling goes away.
	base := issuer.DeepCopy()
	issuer.Spec.ACME.Server, issuer.Spec.ACME.CABundle = pebble.DirectoryURL(), pebble.CABundle
	if err := testKube.Client.Patch(ctx, issuer, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitForIssuer(t, issuer, "Issuer Ready after the fix", reconciledCondition(issuer, typeReady, metav1.ConditionTrue, "AccountRegistered"))
	if c := meta.FindStatusCondition(issuer.Status.Conditions, typeReconciling); c != nil {
		t.Errorf("the Ready issuer still has Reconciling=%s", c.Status)
	}
	if got := kstatusOf(t, issuer); got.Status != status.CurrentStatus {
		t.Errorf("kstatus after the fix = %s (%s), want Current", got.Status, got.Message)
	}
}

// issuerHistory is every version of the Issuers of a namespace a watch saw.
type issuerHistory struct {
	mu       sync.Mutex
	versions []certpilotv1alpha1.Issuer
}

// readyTrue counts the versions with Ready=True.
func (h *issuerHistory) readyTrue() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, issuer := range h.versions {
		if meta.IsStatusConditionTrue(issuer.Status.Conditions, typeReady) {
			n++
		}
	}
	return n
}

// watchIssuers records every version of the Issuers in namespace until ctx ends.
func watchIssuers(ctx context.Context, t *testing.T, namespace string) *issuerHistory {
	t.Helper()
	watcher, err := client.NewWithWatch(testKube.Config, client.Options{Scheme: testKube.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	events, err := watcher.Watch(ctx, &certpilotv1alpha1.IssuerList{}, client.InNamespace(namespace))
	if err != nil {
		t.Fatalf("Watching Issuers: %v", err)
	}
	history := &issuerHistory{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for event := range events.ResultChan() {
			if issuer, ok := event.Object.(*certpilotv1alpha1.Issuer); ok && event.Type != watch.Error {
				history.mu.Lock()
				history.versions = append(history.versions, *issuer.DeepCopy())
				history.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		events.Stop()
		<-done
	})
	return history
}
