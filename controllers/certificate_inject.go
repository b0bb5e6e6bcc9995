package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/pki"
)

// Injection into workloads (spec.inject). Every Certificate writes into a workload with its own
// server-side apply field manager, so that several Certificates (and GitOps tools) share a
// workload without removing each other's fields, and an entry removed from spec.inject is
// undone by applying an empty configuration under that manager. Only the pod template is
// written: an env var with a secretKeyRef, or a read-only Secret volume and its mounts, and the
// rollout annotation. The certificate's bytes never go into the workload.
const (
	// injectTargetIndex indexes Certificates by the "<kind>/<name>" of each inject target, so a
	// workload that appears or changes wakes exactly the Certificates that inject into it.
	injectTargetIndex = "spec.inject"
	// injectFieldManagerPrefix starts the field manager of one Certificate's injections.
	injectFieldManagerPrefix = "certpilot-inject-"
	// annotationSerialPrefix starts the pod-template annotation that holds the serial of the
	// injected certificate; a new serial rolls the workload.
	annotationSerialPrefix = "certpilot.dev/serial-"
	// injectVolumePrefix starts the name of the Secret volume of a mountPath injection.
	injectVolumePrefix = "certpilot-"
)

// Reasons of the Injected condition, from the least to the most severe.
const (
	reasonInjected              = "Injected"
	reasonInjectWaiting         = "WaitingForCertificate"
	reasonInjectTargetNotFound  = "TargetNotFound"
	reasonInjectConflict        = "InjectConflict"
	reasonInjectFailed          = "InjectFailed"
	injectEventRemoved          = "InjectionRemoved"
	injectFieldManagerMaxLength = 128
)

// injectSeverity orders the Injected reasons: the condition carries the worst one.
var injectSeverity = map[string]int{
	reasonInjectWaiting: 1, reasonInjectTargetNotFound: 2, reasonInjectConflict: 3, reasonInjectFailed: 4,
}

// workloadKind is what injection needs to know about one kind of workload.
type workloadKind struct {
	newObject func() client.Object
	template  func(client.Object) *corev1.PodTemplateSpec
	// extract returns the pod template fields fieldManager owns (nil when none).
	extract func(obj client.Object, fieldManager string) (*corev1ac.PodTemplateSpecApplyConfiguration, error)
	// apply is the configuration that sets the pod template to template (nil: owns nothing).
	apply func(name, namespace string, template *corev1ac.PodTemplateSpecApplyConfiguration) runtime.ApplyConfiguration
}

var workloadKinds = map[string]workloadKind{
	certpilotv1alpha1.InjectKindDeployment: {
		newObject: func() client.Object { return &appsv1.Deployment{} },
		template:  func(obj client.Object) *corev1.PodTemplateSpec { return &obj.(*appsv1.Deployment).Spec.Template },
		extract: func(obj client.Object, fieldManager string) (*corev1ac.PodTemplateSpecApplyConfiguration, error) {
			owned, err := appsv1ac.ExtractDeployment(obj.(*appsv1.Deployment), fieldManager)
			if err != nil || owned.Spec == nil {
				return nil, err
			}
			return owned.Spec.Template, nil
		},
		apply: func(name, namespace string, template *corev1ac.PodTemplateSpecApplyConfiguration) runtime.ApplyConfiguration {
			apply := appsv1ac.Deployment(name, namespace)
			if template != nil {
				apply.WithSpec(appsv1ac.DeploymentSpec().WithTemplate(template))
			}
			return apply
		},
	},
	certpilotv1alpha1.InjectKindStatefulSet: {
		newObject: func() client.Object { return &appsv1.StatefulSet{} },
		template:  func(obj client.Object) *corev1.PodTemplateSpec { return &obj.(*appsv1.StatefulSet).Spec.Template },
		extract: func(obj client.Object, fieldManager string) (*corev1ac.PodTemplateSpecApplyConfiguration, error) {
			owned, err := appsv1ac.ExtractStatefulSet(obj.(*appsv1.StatefulSet), fieldManager)
			if err != nil || owned.Spec == nil {
				return nil, err
			}
			return owned.Spec.Template, nil
		},
		apply: func(name, namespace string, template *corev1ac.PodTemplateSpecApplyConfiguration) runtime.ApplyConfiguration {
			apply := appsv1ac.StatefulSet(name, namespace)
			if template != nil {
				apply.WithSpec(appsv1ac.StatefulSetSpec().WithTemplate(template))
			}
			return apply
		},
	},
	certpilotv1alpha1.InjectKindDaemonSet: {
		newObject: func() client.Object { return &appsv1.DaemonSet{} },
		template:  func(obj client.Object) *corev1.PodTemplateSpec { return &obj.(*appsv1.DaemonSet).Spec.Template },
		extract: func(obj client.Object, fieldManager string) (*corev1ac.PodTemplateSpecApplyConfiguration, error) {
			owned, err := appsv1ac.ExtractDaemonSet(obj.(*appsv1.DaemonSet), fieldManager)
			if err != nil || owned.Spec == nil {
				return nil, err
			}
			return owned.Spec.Template, nil
		},
		apply: func(name, namespace string, template *corev1ac.PodTemplateSpecApplyConfiguration) runtime.ApplyConfiguration {
			apply := appsv1ac.DaemonSet(name, namespace)
			if template != nil {
				apply.WithSpec(appsv1ac.DaemonSetSpec().WithTemplate(template))
			}
			return apply
		},
	},
}

// injectProblem is one reason an entry is not (yet) in its workload.
type injectProblem struct {
	reason, message string
}

// injectSource is the certificate being injected.
type injectSource struct {
	certificate string // the Certificate's name
	secretName  string
	serial      string // hexadecimal serial of the certificate in the Secret
}

// injectFinalizer keeps a Certificate until what it injected into workloads is undone.
const injectFinalizer = "certpilot.dev/inject-cleanup"

// uninjectAll undoes every injection of a Certificate being deleted and then lets it go. A
// workload that cannot be restored now is retried (requeue); one that is gone needs nothing.
func (r *CertificateReconciler) uninjectAll(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(run.cert, injectFinalizer) {
		return ctrl.Result{}, nil
	}
	run.cert.Spec.Inject = nil // in memory only: undo everything recorded in status.injected
	if _, err := r.inject(ctx, run); err != nil {
		return ctrl.Result{}, err
	}
	if len(run.cert.Status.Injected) > 0 {
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	}
	return ctrl.Result{}, kube.SetFinalizer(ctx, r.Client, run.cert, injectFinalizer, false)
}

// inject delivers the certificate in the current Secret into the workloads of spec.inject and
// undoes what it wrote into workloads no longer listed. It runs first on every reconcile,
// writes nothing when every workload already holds what it should, and never ends the
// reconcile: problems go into the Injected condition and Events, so they cannot keep a valid
// certificate from being renewed or turn its Ready condition False.
func (r *CertificateReconciler) inject(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	cert := run.cert
	if len(cert.Spec.Inject) == 0 && len(cert.Status.Injected) == 0 {
		meta.RemoveStatusCondition(&cert.Status.Conditions, certpilotv1alpha1.ConditionInjected)
		return ctrl.Result{}, nil
	}
	// While certpilot may own fields in workloads, deleting the Certificate first undoes them:
	// left behind, an env reference to the deleted Secret would keep new pods from starting.
	if len(cert.Spec.Inject) > 0 && cert.DeletionTimestamp.IsZero() {
		if err := kube.SetFinalizer(ctx, r.Client, cert, injectFinalizer, true); err != nil {
			return ctrl.Result{}, err
		}
	}
	source := r.injectSource(ctx, cert)

	// Spec workloads first, in spec order, then those injected before and no longer listed.
	var workloads []certpilotv1alpha1.InjectedWorkload
	entries := map[certpilotv1alpha1.InjectedWorkload][]certpilotv1alpha1.InjectTarget{}
	for _, entry := range cert.Spec.Inject {
		workload := certpilotv1alpha1.InjectedWorkload{Kind: entry.Kind, Name: entry.Name}
		if _, seen := entries[workload]; !seen {
			workloads = append(workloads, workload)
		}
		entries[workload] = append(entries[workload], entry)
	}
	for _, workload := range cert.Status.Injected {
		if _, listed := entries[workload]; !listed {
			workloads = append(workloads, workload)
			entries[workload] = nil
		}
	}

	var (
		problems []injectProblem
		injected []string
		keep     []certpilotv1alpha1.InjectedWorkload
	)
	for _, workload := range workloads {
		result := r.injectWorkload(ctx, run, source, workload, entries[workload])
		problems = append(problems, result.problems...)
		injected = append(injected, result.injected...)
		if result.keep {
			keep = append(keep, workload)
		}
	}
	cert.Status.Injected = keep
	r.setInjectedCondition(run, problems, injected)
	return ctrl.Result{}, nil
}

// injectSource reads the serial of the certificate in the Secret; it is empty while there is
// no certificate certpilot can inject (none issued yet, unreadable, or a Secret that is not
// certpilot's: the decision reports those).
func (r *CertificateReconciler) injectSource(ctx context.Context, cert *certpilotv1alpha1.Certificate) injectSource {
	source := injectSource{certificate: cert.Name, secretName: cert.Spec.SecretName}
	secret, err := r.certificateSecret(ctx, cert, false)
	if err != nil || secret == nil || len(secret.Data[certpilotv1alpha1.BundleKey]) == 0 {
		return source
	}
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		return source
	}
	source.serial = fmt.Sprintf("%x", leaf.SerialNumber)
	return source
}

// workloadResult is the outcome of injecting into one workload.
type workloadResult struct {
	problems []injectProblem
	injected []string // descriptions of the entries in place
	keep     bool     // certpilot may own fields in the workload: keep it in status.injected
}

// injectWorkload brings one workload to what the Certificate's entries for it ask (nothing,
// when entries is empty).
func (r *CertificateReconciler) injectWorkload(ctx context.Context, run *certificateRun, source injectSource,
	workload certpilotv1alpha1.InjectedWorkload, entries []certpilotv1alpha1.InjectTarget) workloadResult {
	cert := run.cert
	recorded := slices.Contains(cert.Status.Injected, workload)
	describe := workload.Kind + "/" + workload.Name
	kind, known := workloadKinds[workload.Kind]
	if !known {
		return workloadResult{problems: []injectProblem{{reasonInjectFailed, fmt.Sprintf("%s: unknown kind", describe)}}}
	}
	obj := kind.newObject()
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: cert.Namespace, Name: workload.Name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			if len(entries) == 0 {
				return workloadResult{} // gone, and with it what certpilot wrote
			}
			return workloadResult{problems: []injectProblem{{reasonInjectTargetNotFound,
				fmt.Sprintf("%s does not exist yet; certpilot injects into it when it appears", describe)}}}
		}
		return workloadResult{keep: recorded, problems: []injectProblem{{reasonInjectFailed, fmt.Sprintf("reading %s: %v", describe, err)}}}
	}
	fieldManager := injectFieldManager(cert.Name)
	owned, err := kind.extract(obj, fieldManager)
	if err != nil {
		return workloadResult{keep: recorded, problems: []injectProblem{{reasonInjectFailed, fmt.Sprintf("reading the fields certpilot owns in %s: %v", describe, err)}}}
	}
	if len(entries) > 0 && source.serial == "" {
		// No certificate to inject yet (or it is being issued again): leave the workload as it is.
		return workloadResult{keep: recorded || owned != nil, problems: []injectProblem{{reasonInjectWaiting,
			fmt.Sprintf("%s waits for the certificate in Secret %s", describe, source.secretName)}}}
	}

	plan := planInjection(source, workload, entries, kind.template(obj), owned)
	result := workloadResult{problems: plan.problems, injected: plan.injected, keep: plan.template != nil}
	if sameInjection(owned, plan.template) {
		return result
	}
	if plan.template != nil && !recorded {
		// Recorded before the write, so a removed entry is undone even if the controller stops
		// between the write and the status update.
		cert.Status.Injected = append(cert.Status.Injected, workload)
		if err := r.patchStatus(ctx, run); err != nil {
			result.keep, result.injected = false, nil
			result.problems = append(result.problems, injectProblem{reasonInjectFailed, err.Error()})
			return result
		}
	}
	apply := kind.apply(workload.Name, cert.Namespace, plan.template)
	if err := r.Apply(ctx, apply, client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
		result.keep, result.injected = recorded || plan.template != nil, nil
		result.problems = append(result.problems, injectProblem{reasonInjectFailed, fmt.Sprintf("writing into %s: %v", describe, err)})
		return result
	}
	log := ctrl.LoggerFrom(ctx)
	if plan.template == nil {
		log.Info("Removed certificate injection", "workload", describe)
		r.Recorder.Eventf(cert, obj, corev1.EventTypeNormal, injectEventRemoved, "Inject",
			"Removed what certpilot injected into %s", describe)
	} else {
		log.Info("Injected certificate", "workload", describe, "serial", source.serial)
		r.Recorder.Eventf(cert, obj, corev1.EventTypeNormal, reasonInjected, "Inject",
			"Injected certificate serial %s into %s: %s", source.serial, describe, strings.Join(plan.injected, ", "))
	}
	return result
}

// setInjectedCondition summarises injection: True when every entry is in place, False with the
// worst reason otherwise, and no condition when nothing is to be injected. A Warning Event
// goes out when a conflict or a failure first appears (or changes), not on every reconcile.
func (r *CertificateReconciler) setInjectedCondition(run *certificateRun, problems []injectProblem, injected []string) {
	cert := run.cert
	if len(problems) == 0 {
		if len(cert.Spec.Inject) == 0 {
			meta.RemoveStatusCondition(&cert.Status.Conditions, certpilotv1alpha1.ConditionInjected)
			return
		}
		setCondition(&cert.Status.Conditions, cert.Generation, certpilotv1alpha1.ConditionInjected, metav1.ConditionTrue,
			reasonInjected, "Injected into "+strings.Join(injected, ", "))
		return
	}
	reason := problems[0].reason
	messages := make([]string, 0, len(problems))
	for _, problem := range problems {
		if injectSeverity[problem.reason] > injectSeverity[reason] {
			reason = problem.reason
		}
		messages = append(messages, problem.message)
	}
	message := strings.Join(messages, "; ")
	previous := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionInjected)
	if (reason == reasonInjectConflict || reason == reasonInjectFailed) &&
		(previous == nil || previous.Reason != reason || previous.Message != message) {
		r.Recorder.Eventf(cert, nil, corev1.EventTypeWarning, reason, "Inject", "%s", message)
	}
	setCondition(&cert.Status.Conditions, cert.Generation, certpilotv1alpha1.ConditionInjected, metav1.ConditionFalse, reason, message)
}

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
		for _, key := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, corev1.ServiceAccountRootCAKey, certpilotv1alpha1.BundleKey} {
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

// injectTargetKeys are the index values of a Certificate: "<kind>/<name>" of each inject target.
func injectTargetKeys(obj client.Object) []string {
	var keys []string
	for _, entry := range obj.(*certpilotv1alpha1.Certificate).Spec.Inject {
		if key := entry.Kind + "/" + entry.Name; !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
	}
	return keys
}

// certificatesInjectingInto maps a workload of one kind (metadata only) to the Certificates of
// its namespace that inject into it.
func (r *CertificateReconciler) certificatesInjectingInto(kind string) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		var list certpilotv1alpha1.CertificateList
		if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace()),
			client.MatchingFields{injectTargetIndex: kind + "/" + obj.GetName()}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing the certificates that inject into a workload failed",
				"kind", kind, "workload", obj.GetNamespace()+"/"+obj.GetName())
			return nil
		}
		requests := make([]reconcile.Request, 0, len(list.Items))
		for _, cert := range list.Items {
			requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cert)})
		}
		return requests
	}
}
