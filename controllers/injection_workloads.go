package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// Injection into workloads (spec.inject): what the injection controller writes, and how. Every Certificate writes into a workload with its own
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
	// outputKeys are the keystores and other formats (spec.keystores,
	// spec.additionalOutputFormats) the Secret holds, mounted with the certificate.
	outputKeys []string
}

// injectFinalizer keeps a Certificate until what it injected into workloads is undone.
const injectFinalizer = "certpilot.dev/inject-cleanup"

// workloadResult is the outcome of injecting into one workload.
type workloadResult struct {
	problems []injectProblem
	injected []string // descriptions of the entries in place
	keep     bool     // certpilot may own fields in the workload: keep it in status.injected
}

// workloadPlan is what one workload needs: nothing more than result (write false), or the
// server-side apply of template (nil: remove everything the Certificate wrote there).
type workloadPlan struct {
	workload certpilotv1alpha1.InjectedWorkload
	kind     workloadKind
	obj      client.Object
	template *corev1ac.PodTemplateSpecApplyConfiguration
	// recorded: status.injected lists the workload already.
	recorded bool
	write    bool
	result   workloadResult
}

// planWorkload reads one workload from the API and plans what the Certificate's entries for it
// ask (nothing, when entries is empty).
func (r *InjectionReconciler) planWorkload(ctx context.Context, cert *certpilotv1alpha1.Certificate, source injectSource, target injectTarget) workloadPlan {
	workload, entries := target.workload, target.entries
	plan := workloadPlan{workload: workload, recorded: slices.Contains(cert.Status.Injected, workload)}
	describe := workload.Kind + "/" + workload.Name
	kind, known := workloadKinds[workload.Kind]
	if !known {
		plan.result = workloadResult{problems: []injectProblem{{reasonInjectFailed, fmt.Sprintf("%s: unknown kind", describe)}}}
		return plan
	}
	if !r.kindEnabled(workload.Kind) {
		// Not readable (the manager may have no RBAC for the kind): a listed entry fails and
		// stays recorded, so that turning the kind on again undoes what was written; an entry
		// no longer listed is forgotten (it cannot be undone, and must not block deletion).
		if len(entries) == 0 {
			plan.result = workloadResult{problems: []injectProblem{{reasonInjectFailed, fmt.Sprintf(
				"%s: what certpilot injected there was not removed: injection into %ss is turned off (--inject-kinds)", describe, workload.Kind)}}}
			return plan
		}
		plan.result = workloadResult{keep: plan.recorded, problems: []injectProblem{{reasonInjectFailed, fmt.Sprintf(
			"%s: injection into %ss is turned off in this installation (--inject-kinds; Helm: injection.kinds)", describe, workload.Kind)}}}
		return plan
	}
	plan.kind = kind
	obj := kind.newObject()
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: cert.Namespace, Name: workload.Name}, obj); err != nil {
		switch {
		case apierrors.IsNotFound(err) && len(entries) == 0:
			// gone, and with it what certpilot wrote
		case apierrors.IsNotFound(err):
			plan.result = workloadResult{problems: []injectProblem{{reasonInjectTargetNotFound,
				fmt.Sprintf("%s does not exist yet; certpilot injects into it when it appears", describe)}}}
		default:
			plan.result = workloadResult{keep: plan.recorded, problems: []injectProblem{{reasonInjectFailed, fmt.Sprintf("reading %s: %v", describe, err)}}}
		}
		return plan
	}
	plan.obj = obj
	owned, err := kind.extract(obj, injectFieldManager(cert.Name))
	if err != nil {
		plan.result = workloadResult{keep: plan.recorded, problems: []injectProblem{{reasonInjectFailed, fmt.Sprintf("reading the fields certpilot owns in %s: %v", describe, err)}}}
		return plan
	}
	if len(entries) > 0 && source.serial == "" {
		// No certificate to inject yet (or it is being issued again): leave the workload as it is.
		plan.result = workloadResult{keep: plan.recorded || owned != nil, problems: []injectProblem{{reasonInjectWaiting,
			fmt.Sprintf("%s waits for the certificate in Secret %s", describe, source.secretName)}}}
		return plan
	}
	injection := planInjection(source, workload, entries, kind.template(obj), owned)
	plan.template = injection.template
	plan.result = workloadResult{problems: injection.problems, injected: injection.injected, keep: injection.template != nil}
	plan.write = !sameInjection(owned, injection.template)
	return plan
}

// writeWorkload applies a workload's plan with the Certificate's field manager and announces it.
func (r *InjectionReconciler) writeWorkload(ctx context.Context, cert *certpilotv1alpha1.Certificate, source injectSource, plan workloadPlan) workloadResult {
	result := plan.result
	describe := plan.workload.Kind + "/" + plan.workload.Name
	apply := plan.kind.apply(plan.workload.Name, cert.Namespace, plan.template)
	if err := r.Apply(ctx, apply, client.FieldOwner(injectFieldManager(cert.Name)), client.ForceOwnership); err != nil {
		result.keep, result.injected = plan.recorded || plan.template != nil, nil
		result.problems = append(result.problems, injectProblem{reasonInjectFailed, fmt.Sprintf("writing into %s: %v", describe, err)})
		return result
	}
	log := ctrl.LoggerFrom(ctx)
	if plan.template == nil {
		log.Info("Removed certificate injection", "workload", describe)
		r.Recorder.Eventf(cert, plan.obj, corev1.EventTypeNormal, injectEventRemoved, "Inject",
			"Removed what certpilot injected into %s", describe)
	} else {
		log.Info("Injected certificate", "workload", describe, "serial", source.serial)
		r.Recorder.Eventf(cert, plan.obj, corev1.EventTypeNormal, reasonInjected, "Inject",
			"Injected certificate serial %s into %s: %s", source.serial, describe, strings.Join(result.injected, ", "))
	}
	return result
}
