package controllers

// The pure half of injection: what one Certificate writes into one workload.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// injectionPlan is what one Certificate writes into one workload.
type injectionPlan struct {
	// template holds only certpilot's fields; nil when the Certificate writes nothing there.
	template *corev1ac.PodTemplateSpecApplyConfiguration
	injected []string
	problems []injectProblem
}

// planInjection computes the pod template fields a Certificate's entries for one workload ask
// for. live is the workload's pod template; owned is what the Certificate's field manager owns
// in it now. An entry is refused, whole, when its container is missing or when its env name
// or mount path is already set in a container by someone else (a person, a GitOps tool or
// another Certificate): certpilot never takes over a field it did not write.
func planInjection(source injectSource, workload certpilotv1alpha1.InjectedWorkload, entries []certpilotv1alpha1.InjectTarget,
	live *corev1.PodTemplateSpec, owned *corev1ac.PodTemplateSpecApplyConfiguration) injectionPlan {
	var plan injectionPlan
	describe := workload.Kind + "/" + workload.Name
	volumeName := injectVolumeName(source.certificate)
	type containerFields struct {
		env    []*corev1ac.EnvVarApplyConfiguration
		mounts []*corev1ac.VolumeMountApplyConfiguration
	}
	planned := map[string]*containerFields{}
	mountVolume, rollout := false, false

	for _, entry := range entries {
		containers, problem := entryContainers(entry, live, describe)
		if problem == nil {
			problem = entryConflict(entry, containers, live, owned, volumeName, describe)
		}
		if problem == nil {
			for _, container := range containers {
				fields := planned[container]
				if fields == nil {
					continue
				}
				if (entry.Env != "" && slices.ContainsFunc(fields.env, func(e *corev1ac.EnvVarApplyConfiguration) bool { return *e.Name == entry.Env })) ||
					(entry.MountPath != "" && slices.ContainsFunc(fields.mounts, func(m *corev1ac.VolumeMountApplyConfiguration) bool { return *m.MountPath == entry.MountPath })) {
					problem = &injectProblem{reasonInjectConflict, fmt.Sprintf("%s: entry %s repeats an earlier entry for container %q", describe, describeEntry(entry), container)}
					break
				}
			}
		}
		if problem != nil {
			plan.problems = append(plan.problems, *problem)
			continue
		}
		for _, container := range containers {
			fields := planned[container]
			if fields == nil {
				fields = &containerFields{}
				planned[container] = fields
			}
			if entry.Env != "" {
				fields.env = append(fields.env, corev1ac.EnvVar().WithName(entry.Env).WithValueFrom(
					corev1ac.EnvVarSource().WithSecretKeyRef(corev1ac.SecretKeySelector().
						WithName(source.secretName).WithKey(certpilotv1alpha1.BundleKey))))
			} else {
				fields.mounts = append(fields.mounts, corev1ac.VolumeMount().WithName(volumeName).
					WithMountPath(entry.MountPath).WithReadOnly(true))
				mountVolume = true
			}
		}
		if rolloutOf(entry) == certpilotv1alpha1.RolloutAlways {
			rollout = true
		}
		plan.injected = append(plan.injected, describe+" "+describeEntry(entry))
	}
	if len(planned) == 0 {
		return plan
	}

	podSpec := corev1ac.PodSpec()
	for _, container := range live.Spec.Containers { // the workload's order
		fields := planned[container.Name]
		if fields == nil {
			continue
		}
		apply := corev1ac.Container().WithName(container.Name)
		if len(fields.env) > 0 {
			apply.WithEnv(fields.env...)
		}
		if len(fields.mounts) > 0 {
			apply.WithVolumeMounts(fields.mounts...)
		}
		podSpec.WithContainers(apply)
	}
	if mountVolume {
		secret := corev1ac.SecretVolumeSource().WithSecretName(source.secretName)
		keys := append([]string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, corev1.ServiceAccountRootCAKey, certpilotv1alpha1.BundleKey}, source.outputKeys...)
		for _, key := range keys {
			secret.WithItems(corev1ac.KeyToPath().WithKey(key).WithPath(key))
		}
		podSpec.WithVolumes(corev1ac.Volume().WithName(volumeName).WithSecret(secret))
	}
	plan.template = corev1ac.PodTemplateSpec().WithSpec(podSpec)
	if rollout {
		plan.template.WithAnnotations(map[string]string{serialAnnotation(source.certificate): source.serial})
	}
	return plan
}

// entryContainers returns the names of the containers an entry injects into: the one it names,
// or every container of the pod template.
func entryContainers(entry certpilotv1alpha1.InjectTarget, live *corev1.PodTemplateSpec, describe string) ([]string, *injectProblem) {
	var names []string
	for _, container := range live.Spec.Containers {
		if entry.Container == "" || container.Name == entry.Container {
			names = append(names, container.Name)
		}
	}
	if len(names) > 0 {
		return names, nil
	}
	if entry.Container == "" {
		return nil, &injectProblem{reasonInjectConflict, fmt.Sprintf("%s has no containers", describe)}
	}
	return nil, &injectProblem{reasonInjectConflict, fmt.Sprintf("%s has no container %q (entry %s)", describe, entry.Container, describeEntry(entry))}
}

// entryConflict refuses an entry whose env name, mount path or volume is already in the
// workload and not written by this Certificate.
func entryConflict(entry certpilotv1alpha1.InjectTarget, containers []string, live *corev1.PodTemplateSpec,
	owned *corev1ac.PodTemplateSpecApplyConfiguration, volumeName, describe string) *injectProblem {
	ownedContainer := func(name string) *corev1ac.ContainerApplyConfiguration {
		if owned == nil || owned.Spec == nil {
			return nil
		}
		for i := range owned.Spec.Containers {
			if c := &owned.Spec.Containers[i]; c.Name != nil && *c.Name == name {
				return c
			}
		}
		return nil
	}
	for _, container := range live.Spec.Containers {
		if !slices.Contains(containers, container.Name) {
			continue
		}
		mine := ownedContainer(container.Name)
		if entry.Env != "" && slices.ContainsFunc(container.Env, func(e corev1.EnvVar) bool { return e.Name == entry.Env }) &&
			(mine == nil || !slices.ContainsFunc(mine.Env, func(e corev1ac.EnvVarApplyConfiguration) bool { return e.Name != nil && *e.Name == entry.Env })) {
			return &injectProblem{reasonInjectConflict, fmt.Sprintf(
				"%s: container %q already has an environment variable %s that certpilot did not write for this Certificate (another Certificate or field manager sets it); certpilot leaves it alone: choose another env name",
				describe, container.Name, entry.Env)}
		}
		if entry.MountPath != "" && slices.ContainsFunc(container.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == entry.MountPath }) &&
			(mine == nil || !slices.ContainsFunc(mine.VolumeMounts, func(m corev1ac.VolumeMountApplyConfiguration) bool {
				return m.MountPath != nil && *m.MountPath == entry.MountPath
			})) {
			return &injectProblem{reasonInjectConflict, fmt.Sprintf(
				"%s: container %q already mounts something at %s that certpilot did not write for this Certificate; choose another mountPath",
				describe, container.Name, entry.MountPath)}
		}
	}
	if entry.MountPath != "" && slices.ContainsFunc(live.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == volumeName }) &&
		(owned == nil || owned.Spec == nil || !slices.ContainsFunc(owned.Spec.Volumes, func(v corev1ac.VolumeApplyConfiguration) bool {
			return v.Name != nil && *v.Name == volumeName
		})) {
		return &injectProblem{reasonInjectConflict, fmt.Sprintf("%s already has a volume %q that certpilot did not write", describe, volumeName)}
	}
	return nil
}

// sameInjection reports whether the fields a Certificate owns in a workload are the ones it
// would write: then nothing is written. Lists are compared in a fixed order, since the server
// may keep them in another.
func sameInjection(owned, desired *corev1ac.PodTemplateSpecApplyConfiguration) bool {
	if owned == nil || desired == nil {
		return (owned == nil || isEmptyTemplate(owned)) && desired == nil
	}
	a, errA := canonicalTemplate(owned)
	b, errB := canonicalTemplate(desired)
	return errA == nil && errB == nil && equality.Semantic.DeepEqual(a, b)
}

func isEmptyTemplate(template *corev1ac.PodTemplateSpecApplyConfiguration) bool {
	canonical, err := canonicalTemplate(template)
	return err == nil && equality.Semantic.DeepEqual(canonical, &corev1.PodTemplateSpec{})
}

// canonicalTemplate turns an apply configuration into a pod template with its lists sorted.
func canonicalTemplate(template *corev1ac.PodTemplateSpecApplyConfiguration) (*corev1.PodTemplateSpec, error) {
	data, err := json.Marshal(template)
	if err != nil {
		return nil, err
	}
	var canonical corev1.PodTemplateSpec
	if err := json.Unmarshal(data, &canonical); err != nil {
		return nil, err
	}
	spec := &canonical.Spec
	slices.SortFunc(spec.Containers, func(a, b corev1.Container) int { return strings.Compare(a.Name, b.Name) })
	for i := range spec.Containers {
		c := &spec.Containers[i]
		slices.SortFunc(c.Env, func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) })
		slices.SortFunc(c.VolumeMounts, func(a, b corev1.VolumeMount) int { return strings.Compare(a.MountPath, b.MountPath) })
	}
	slices.SortFunc(spec.Volumes, func(a, b corev1.Volume) int { return strings.Compare(a.Name, b.Name) })
	return &canonical, nil
}

// rolloutOf is the entry's rollout policy with its default: env is read when a container
// starts, so it rolls; mounted files are refreshed in place, so they do not.
func rolloutOf(entry certpilotv1alpha1.InjectTarget) string {
	if entry.Rollout != "" {
		return entry.Rollout
	}
	if entry.Env != "" {
		return certpilotv1alpha1.RolloutAlways
	}
	return certpilotv1alpha1.RolloutNever
}

func describeEntry(entry certpilotv1alpha1.InjectTarget) string {
	what := "env " + entry.Env
	if entry.MountPath != "" {
		what = "mount " + entry.MountPath
	}
	if entry.Container != "" {
		what += " in container " + entry.Container
	}
	return "(" + what + ")"
}

// injectFieldManager is the field manager of one Certificate's injections (at most 128
// characters, as the API requires).
func injectFieldManager(certificate string) string {
	return boundedName(injectFieldManagerPrefix, certificate, injectFieldManagerMaxLength)
}

// serialAnnotation is the pod-template annotation that holds the serial of one Certificate's
// certificate (an annotation name is at most 63 characters after the prefix).
func serialAnnotation(certificate string) string {
	return "certpilot.dev/" + boundedName("serial-", certificate, 63)
}

// injectVolumeName is the Secret volume of one Certificate in a pod template: a DNS label.
func injectVolumeName(certificate string) string {
	if strings.Contains(certificate, ".") {
		// Dots are not allowed in a label; a hash keeps "a.b" and "a-b" apart.
		return hashedName(injectVolumePrefix, strings.ReplaceAll(certificate, ".", "-"), certificate, 63)
	}
	return boundedName(injectVolumePrefix, certificate, 63)
}

// boundedName is prefix+name, shortened with a hash of name when longer than limit.
func boundedName(prefix, name string, limit int) string {
	if len(prefix)+len(name) <= limit {
		return prefix + name
	}
	return hashedName(prefix, name, name, limit)
}

// hashedName is prefix + name (cut to fit) + "-" + a short hash of hashed, at most limit long.
func hashedName(prefix, name, hashed string, limit int) string {
	sum := sha256.Sum256([]byte(hashed))
	suffix := hex.EncodeToString(sum[:])[:10]
	keep := min(len(name), limit-len(prefix)-len(suffix)-1)
	return prefix + strings.TrimRight(name[:keep], ".-") + "-" + suffix
}
