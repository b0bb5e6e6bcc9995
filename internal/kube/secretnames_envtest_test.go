package kube_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestSecretNames checks, on a real apiserver, that SecretNames knows the Secrets that are not
// labelled as certpilot's and only those, and that LookUpSecret reads the API for those alone.
func TestSecretNames(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "secret-names-"}}
	if err := env.Client.Create(ctx, namespace); err != nil {
		t.Fatal(err)
	}
	names := testenv.SecretNames(t, env, namespace.Name)
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace.Name, Name: "foreign",
		Labels: map[string]string{certpilotv1alpha1.LabelManagedBy: "someone-else"}}, Data: map[string][]byte{"k": []byte("v")}}
	managed := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace.Name, Name: "managed",
		Labels: map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue}}}
	for _, secret := range []*corev1.Secret{foreign, managed} {
		if err := env.Client.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}
	key := func(name string) types.NamespacedName {
		return types.NamespacedName{Namespace: namespace.Name, Name: name}
	}
	testenv.Eventually(t, 30*time.Second, "SecretNames sees the foreign Secret", func() error {
		if exists, err := names.Exists(ctx, key("foreign")); err != nil || !exists {
			return fmt.Errorf("Exists(foreign) = %v, %v", exists, err)
		}
		return nil
	})
	for _, name := range []string{"managed", "missing"} {
		if exists, err := names.Exists(ctx, key(name)); err != nil || exists {
			t.Errorf("Exists(%s) = %v, %v; want false", name, exists, err)
		}
	}

	read := &corev1.Secret{}
	if err := kube.LookUpSecret(ctx, names, env.Client, key("foreign"), read); err != nil || string(read.Data["k"]) != "v" {
		t.Errorf("LookUpSecret(foreign) = %v, data %q; want the Secret read from the API", err, read.Data["k"])
	}
	for _, name := range []string{"managed", "missing"} {
		if err := kube.LookUpSecret(ctx, names, env.Client, key(name), &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Errorf("LookUpSecret(%s) = %v; want NotFound without a read", name, err)
		}
	}
	// Without SecretNames, the API is asked.
	if err := kube.LookUpSecret(ctx, nil, env.Client, key("managed"), read); err != nil || read.Name != "managed" {
		t.Errorf("LookUpSecret(nil, managed) = %v; want the Secret", err)
	}

	if err := env.Client.Delete(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "SecretNames forgets the deleted Secret", func() error {
		if exists, err := names.Exists(ctx, key("foreign")); err != nil || exists {
			return fmt.Errorf("Exists(foreign) = %v, %v", exists, err)
		}
		return nil
	})
}
