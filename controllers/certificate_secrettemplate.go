package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// spec.secretTemplate: labels and annotations a user adds to the certificate Secret. They go
// into the Secret's create or apply with the certificate; a change of the template alone is one
// merge patch (syncSecretTemplate), which also removes the keys the template no longer lists.
// Which keys came from the template is recorded on the Secret (annotationTemplateKeys), so a
// removal never touches a key someone else set.

// annotationTemplateKeys records the keys the Secret's labels and annotations got from the
// template: "labels=<k>,<k>;annotations=<k>,<k>", sorted.
const annotationTemplateKeys = "certpilot.dev/secret-template-keys"

// secretTemplate is the part of a Secret's metadata the template decides.
type secretTemplate struct {
	labels, annotations map[string]string
	// refused are the entries the API would not accept on a Secret, left out.
	refused []string
}

// templateOf is the Certificate's template as a Secret may carry it.
func templateOf(cert *certpilotv1alpha1.Certificate) secretTemplate {
	t := secretTemplate{labels: map[string]string{}, annotations: map[string]string{}}
	spec := cert.Spec.SecretTemplate
	if spec == nil {
		return t
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Labels)) {
		v := spec.Labels[k]
		if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) > 0 || ownKey(k) {
			t.refused = append(t.refused, "label "+k)
			continue
		}
		t.labels[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Annotations)) {
		if len(validation.IsQualifiedName(k)) > 0 || ownKey(k) {
			t.refused = append(t.refused, "annotation "+k)
			continue
		}
		t.annotations[k] = spec.Annotations[k]
	}
	return t
}

// ownKey reports whether a label or annotation key is certpilot's.
func ownKey(k string) bool {
	return k == certpilotv1alpha1.LabelManagedBy || strings.HasPrefix(k, "certpilot.dev/")
}

// record is the value of annotationTemplateKeys for t: "" (no annotation) for an empty
// template.
func (t secretTemplate) record() string {
	if len(t.labels) == 0 && len(t.annotations) == 0 {
		return ""
	}
	return "labels=" + strings.Join(slices.Sorted(maps.Keys(t.labels)), ",") +
		";annotations=" + strings.Join(slices.Sorted(maps.Keys(t.annotations)), ",")
}

// recordPatchValue is annotationTemplateKeys' value in a merge patch: nil removes it.
func (t secretTemplate) recordPatchValue() any {
	if record := t.record(); record != "" {
		return record
	}
	return nil
}

// recordedKeys parses annotationTemplateKeys: the label and annotation keys a Secret got from
// the template.
func recordedKeys(secret *corev1.Secret) (labels, annotations []string) {
	for _, part := range strings.Split(secret.Annotations[annotationTemplateKeys], ";") {
		name, keys, _ := strings.Cut(part, "=")
		var list []string
		if keys != "" {
			list = strings.Split(keys, ",")
		}
		switch name {
		case "labels":
			labels = list
		case "annotations":
			annotations = list
		}
	}
	return labels, annotations
}

// withTemplate returns certpilot's labels and annotations of a certificate Secret with the
// template's added (certpilot's win, though admission keeps the template off them).
func (t secretTemplate) withTemplate(labels, annotations map[string]string) (map[string]string, map[string]string) {
	outLabels, outAnnotations := maps.Clone(t.labels), maps.Clone(t.annotations)
	maps.Copy(outLabels, labels)
	maps.Copy(outAnnotations, annotations)
	if record := t.record(); record != "" {
		outAnnotations[annotationTemplateKeys] = record
	}
	return outLabels, outAnnotations
}

// templatePatch is the JSON merge patch that brings secret's template labels and annotations to
// t (values set, keys the template dropped removed); nil when secret is up to date.
func templatePatch(secret *corev1.Secret, t secretTemplate) map[string]any {
	labels, annotations := map[string]any{}, map[string]any{}
	changed := secret.Annotations[annotationTemplateKeys] != t.record()
	oldLabels, oldAnnotations := recordedKeys(secret)
	for _, k := range oldLabels {
		if _, kept := t.labels[k]; !kept && !ownKey(k) {
			labels[k], changed = nil, true
		}
	}
	for _, k := range oldAnnotations {
		if _, kept := t.annotations[k]; !kept && !ownKey(k) {
			annotations[k], changed = nil, true
		}
	}
	for k, v := range t.labels {
		if current, ok := secret.Labels[k]; !ok || current != v {
			changed = true
		}
		labels[k] = v
	}
	for k, v := range t.annotations {
		if current, ok := secret.Annotations[k]; !ok || current != v {
			changed = true
		}
		annotations[k] = v
	}
	if !changed {
		return nil
	}
	annotations[annotationTemplateKeys] = t.recordPatchValue()
	return map[string]any{"metadata": map[string]any{
		"resourceVersion": secret.ResourceVersion, "labels": labels, "annotations": annotations,
	}}
}

// syncSecretTemplate writes a changed template, and the keystores and other formats
// decideOutputs changes (outputKeys), into the certificate Secret: one merge patch, with the
// Secret's resourceVersion (a Secret changed since it was read is looked at again by the next
// reconcile).
func (s *secretStore) syncSecretTemplate(ctx context.Context, run *certificateRun, patch map[string]any, refused, outputKeys []string) error {
	secret := run.observed.secret
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	target := &corev1.Secret{}
	target.Namespace, target.Name = secret.Namespace, secret.Name
	if err := s.client.Patch(ctx, target, client.RawPatch(types.MergePatchType, body), client.FieldOwner(FieldManager)); err != nil {
		return fmt.Errorf("writing the secretTemplate or output formats into Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	if len(outputKeys) > 0 {
		ctrl.LoggerFrom(ctx).Info("Wrote the keystores and output formats into the certificate Secret", "secret", secret.Name, "keys", outputKeys)
	}
	metadata, _ := patch["metadata"].(map[string]any)
	if _, template := metadata["labels"]; !template {
		return nil
	}
	ctrl.LoggerFrom(ctx).Info("Wrote the secretTemplate into the certificate Secret", "secret", secret.Name)
	if len(refused) > 0 {
		s.recorder.Eventf(run.cert, nil, corev1.EventTypeWarning, "SecretTemplateRefused", "Template",
			"Left out of Secret %s what the API refuses on a Secret: %s", secret.Name, strings.Join(refused, ", "))
	}
	return nil
}
