package edge_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"golang.org/x/crypto/acme"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/testenv"
)

// kube is one apiserver for the package (nil under -short).
var kube *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }

// createNamespace creates a namespace for one test and returns its name. The name is
// generated: envtest runs no namespace controller, so namespaces are never really deleted, and
// -count=N reuses the apiserver.
func createNamespace(t *testing.T, ctx context.Context, prefix string) string {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := kube.Client.Create(ctx, namespace); err != nil {
		t.Fatal(err)
	}
	return namespace.Name
}

func challengeSecret(namespace, name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      name,
			Labels:    map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelChallenges: "true"},
		},
		Data: data,
	}
}

func TestSecretSource(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := testContext(t)
	namespace := createNamespace(t, ctx, "edge-secret-source")
	name := v1alpha1.ChallengeSecretName("edge")

	clientset, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	store := edge.NewChallengeStore()
	running := startServer(t, edge.Options{Challenges: store, Log: testr.New(t)})
	sourceCtx, stopSource := context.WithCancel(ctx)
	sourceDone := make(chan error, 1)
	go func() {
		sourceDone <- (&edge.SecretSource{
			Client: clientset, Namespace: namespace, Names: []string{name}, Store: store, Log: testr.New(t),
		}).Run(sourceCtx)
	}()
	t.Cleanup(func() {
		stopSource()
		if err := <-sourceDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	// The Secret does not exist yet: the empty store is the truth, so the edge becomes ready.
	edgetest.Eventually(t, 30*time.Second, running.server.Ready)

	// A Secret with another name in the same namespace is outside the informer's selector.
	account := edgetest.NewAccount(t)
	if err := kube.Client.Create(ctx, challengeSecret(namespace, "other"+v1alpha1.ChallengeSecretSuffix, map[string][]byte{
		v1alpha1.TLSALPN01Key("other.example.com"): account.ChallengeCertificatePEM(t, "token-other", "other.example.com"),
	})); err != nil {
		t.Fatal(err)
	}

	// Created: the challenge certificate is served.
	secret := challengeSecret(namespace, name, map[string][]byte{
		v1alpha1.TLSALPN01Key("a.example.com"): account.ChallengeCertificatePEM(t, "token-1", "a.example.com"),
		v1alpha1.HTTP01Key("token-h"):          []byte("token-h.x"),
	})
	if err := kube.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	keyAuthorization1 := account.KeyAuthorization(t, "token-1")
	edgetest.Eventually(t, 30*time.Second, func() error {
		return edgetest.ValidateChallenge(ctx, running.httpsAddress, "a.example.com", keyAuthorization1)
	})
	if got, _ := store.KeyAuthorization("token-h"); got != "token-h.x" {
		t.Errorf("http-01 key authorization %q", got)
	}

	// Updated with a new challenge for the same name (a new order): the next handshakes get
	// the new certificate.
	secret.Data = map[string][]byte{
		v1alpha1.TLSALPN01Key("a.example.com"): account.ChallengeCertificatePEM(t, "token-2", "a.example.com"),
	}
	if err := kube.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	keyAuthorization2 := account.KeyAuthorization(t, "token-2")
	edgetest.Eventually(t, 30*time.Second, func() error {
		return edgetest.ValidateChallenge(ctx, running.httpsAddress, "a.example.com", keyAuthorization2)
	})
	if _, ok := store.KeyAuthorization("token-h"); ok {
		t.Error("key authorization removed from the Secret is still served")
	}

	// The other Secret was never loaded.
	if _, err := edgetest.Handshake(ctx, running.httpsAddress, "other.example.com", []string{acme.ALPNProto}, 0); err == nil {
		t.Error("challenge certificate of another Secret was served")
	}

	// Deleted: the challenge is no longer answered.
	if err := kube.Client.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, 30*time.Second, func() error {
		if _, err := edgetest.Handshake(ctx, running.httpsAddress, "a.example.com", []string{acme.ALPNProto}, 0); err == nil {
			return errors.New("challenge certificate still served after the Secret was deleted")
		}
		return nil
	})
	if err := running.server.Ready(); err != nil {
		t.Errorf("not ready after the Secret was deleted: %v", err)
	}
}

func TestSecretSourceNeedsItsFields(t *testing.T) {
	source := &edge.SecretSource{Store: edge.NewChallengeStore(), Namespace: "x", Names: []string{"y"}}
	if err := source.Run(t.Context()); err == nil {
		t.Fatal("Run without a client succeeded")
	}
}
