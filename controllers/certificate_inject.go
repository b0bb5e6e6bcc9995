package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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
	secret, err := r.certificateSecret(ctx, cert, false, false)
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
