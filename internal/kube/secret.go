// Package kube holds the small Kubernetes helpers every part of certpilot needs the same way:
// whether an object is certpilot's, reading one key of a Secret, finalizers.
package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// IsManaged reports whether certpilot created obj (its managed-by label). certpilot writes only
// objects it created.
func IsManaged(obj client.Object) bool {
	return obj.GetLabels()[certpilotv1alpha1.LabelManagedBy] == certpilotv1alpha1.ManagedByValue
}

// FromWatchCache is a read of the apiserver's watch cache (resourceVersion "0") instead of a
// quorum read of etcd: far cheaper for the apiserver, and current to within moments. It is for
// lookups whose answer a later write checks anyway (a create fails if the object appeared
// since), such as looking for a Secret the manager's cache does not hold.
var FromWatchCache = &client.GetOptions{Raw: &metav1.GetOptions{ResourceVersion: "0"}}

// ReadSecret reads a Secret; a missing Secret is (nil, nil).
func ReadSecret(ctx context.Context, reader client.Reader, namespace, name string) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s/%s: %w", namespace, name, err)
	}
	return secret, nil
}

// SecretKeyError says what is wrong with a Secret a spec names; its message names the Secret
// and the key, never a value.
type SecretKeyError struct {
	// Missing is true when the Secret does not exist, false when it lacks the key.
	Missing         bool
	Namespace, Name string
	Key             string
}

func (e *SecretKeyError) Error() string {
	if e.Missing {
		return fmt.Sprintf("Secret %s/%s does not exist", e.Namespace, e.Name)
	}
	return fmt.Sprintf("Secret %s/%s has no key %q", e.Namespace, e.Name, e.Key)
}

// ReadSecretKey returns one key of a Secret, or a *SecretKeyError when the Secret or the key is
// missing.
func ReadSecretKey(ctx context.Context, reader client.Reader, namespace, name, key string) ([]byte, error) {
	secret, err := ReadSecret(ctx, reader, namespace, name)
	if err != nil {
		return nil, err
	}
	if secret == nil {
		return nil, &SecretKeyError{Missing: true, Namespace: namespace, Name: name, Key: key}
	}
	value, ok := secret.Data[key]
	if !ok {
		return nil, &SecretKeyError{Namespace: namespace, Name: name, Key: key}
	}
	return value, nil
}

// FieldManager is certpilot's server-side apply field manager for the objects it writes whole
// (certificate Secrets) and the fields it adds to others (a load balancer's challenge volume).
const FieldManager = "certpilot"
