package solver

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// PutLegacy writes entries into secret, the single challenge Secret of earlier versions
// (LegacySecret), so that a load balancer still mounting it keeps working through an upgrade.
func (w *ShardWriter) PutLegacy(ctx context.Context, secret *corev1.Secret, entries []Entry) error {
	data := map[string]any{}
	for _, entry := range entries {
		if current, ok := secret.Data[entry.Key]; !ok || !entry.satisfiedBy(current) {
			data[entry.Key] = entry.Value
		}
	}
	return w.patchLegacy(ctx, secret, data)
}

// RemoveLegacy removes keys from the single challenge Secret of earlier versions, when it
// exists. Only keys Remove removed from the shards are passed: what this owner wrote.
func (w *ShardWriter) RemoveLegacy(ctx context.Context, namespace, deployment string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	secret, err := w.LegacySecret(ctx, namespace, deployment)
	if err != nil || secret == nil {
		return err
	}
	data := map[string]any{}
	for _, key := range keys {
		if _, ok := secret.Data[key]; ok {
			data[key] = nil
		}
	}
	return w.patchLegacy(ctx, secret, data)
}

// legacyRecheck is how long the single challenge Secret of earlier versions, once found missing,
// is taken as missing before it is looked for again (nothing but an earlier version creates it).
const legacyRecheck = time.Minute

// LegacySecret returns the single challenge Secret of earlier versions, nil when the load
// balancer has none; its absence (the normal case) costs one read a minute.
func (w *ShardWriter) LegacySecret(ctx context.Context, namespace, deployment string) (*corev1.Secret, error) {
	name := types.NamespacedName{Namespace: namespace, Name: certpilotv1alpha1.ChallengeSecretName(deployment)}
	now := w.now()
	w.mu.Lock()
	checked, known := w.legacyAbsent[name]
	w.mu.Unlock()
	if known && now.Sub(checked) < legacyRecheck && !now.Before(checked) {
		return nil, nil
	}
	secret := &corev1.Secret{}
	err := w.APIReader.Get(ctx, name, secret) // challenge Secrets are not in the manager's cache
	w.mu.Lock()
	if w.legacyAbsent == nil {
		w.legacyAbsent = map[types.NamespacedName]time.Time{}
	}
	if apierrors.IsNotFound(err) {
		w.legacyAbsent[name] = now
	} else {
		delete(w.legacyAbsent, name)
	}
	w.mu.Unlock()
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading challenge Secret %s: %w", name, err)
	}
	if secret.Labels[certpilotv1alpha1.LabelChallenges] != "true" {
		return nil, nil // a certificate Secret or someone else's: not the old challenge Secret
	}
	return secret, nil
}

// patchLegacy adds and removes keys with a JSON merge patch, which touches only the named keys
// (as earlier versions did): other certificates' responses in the same Secret stay.
func (w *ShardWriter) patchLegacy(ctx context.Context, secret *corev1.Secret, data map[string]any) error {
	if len(data) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		return err
	}
	if err := w.Client.Patch(ctx, secret.DeepCopy(), client.RawPatch(types.MergePatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing challenge Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return nil
}
