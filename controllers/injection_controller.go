package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/pki"
)

// InjectionReconciler delivers the certificate in a Certificate's Secret into the workloads its
// spec.inject lists, and undoes what it wrote into workloads no longer listed (or of a deleted
// Certificate). It is its own controller: issuance never waits for it, and it never waits for
// issuance. It owns status.injected and the Injected condition, written with its own field
// manager (injectionStatusManager) and an optimistic lock, as the issuance controller writes the
// rest of the status with one whenever injection is in use: neither writes over the other's
// fields from a stale copy.
//
// A reconcile observes (the Certificate, its Secret from the cache, each workload from the API),
// plans each workload (planInjection, pure), then acts in order: record in status.injected the
// workloads about to be written (so that a removed entry is undone even after a crash between
// the two writes), apply the workloads, write the Injected condition.
type InjectionReconciler struct {
	client.Client
	// APIReader reads the workloads: the cache holds their metadata only.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	// Kinds are the workload kinds injection may read and write (--inject-kinds; the chart
	// grants RBAC on StatefulSets and DaemonSets only for the kinds listed). Nil: every kind
	// of workloadKinds. A Certificate injecting into another kind gets InjectFailed, and
	// nothing of that kind is watched or read.
	Kinds []string
}

// kindEnabled reports whether injection into workloads of kind is turned on.
func (r *InjectionReconciler) kindEnabled(kind string) bool {
	return r.Kinds == nil || slices.Contains(r.Kinds, kind)
}

// injectionStatusManager is the field manager of the injection controller's status writes.
const injectionStatusManager = "certpilot-inject"

// injectionRetry is how soon a Certificate being deleted is looked at again while a workload
// still holds what it injected.
const injectionRetry = 10 * time.Second

// Reconcile brings every workload of one Certificate to what its spec.inject asks.
func (r *InjectionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cert := &certpilotv1alpha1.Certificate{}
	if err := r.Get(ctx, req.NamespacedName, cert); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	deleting := !cert.DeletionTimestamp.IsZero()
	if !usesInjection(cert) {
		if !deleting {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, kube.SetFinalizer(ctx, r.Client, cert, injectFinalizer, false)
	}
	// While certpilot may own fields in workloads, deleting the Certificate first undoes them:
	// left behind, an env reference to the deleted Secret would keep new pods from starting.
	if len(cert.Spec.Inject) > 0 && !deleting {
		if err := kube.SetFinalizer(ctx, r.Client, cert, injectFinalizer, true); err != nil {
			return ctrl.Result{}, err
		}
	}
	base := cert.DeepCopy()
	entries := cert.Spec.Inject
	if deleting {
		entries = nil // undo everything recorded in status.injected
	}
	source := r.injectSource(ctx, cert)

	// Observe and plan every workload: spec workloads first, in spec order, then those
	// injected before and no longer listed.
	plans := make([]workloadPlan, 0, len(entries)+len(cert.Status.Injected))
	for _, target := range injectTargets(entries, cert.Status.Injected) {
		plans = append(plans, r.planWorkload(ctx, cert, source, target))
	}

	// Act: record the workloads about to be written, write them, then the condition.
	var toRecord []certpilotv1alpha1.InjectedWorkload
	for _, plan := range plans {
		if plan.write && plan.template != nil && !slices.Contains(cert.Status.Injected, plan.workload) {
			toRecord = append(toRecord, plan.workload)
		}
	}
	if len(toRecord) > 0 {
		cert.Status.Injected = append(cert.Status.Injected, toRecord...)
		if err := r.patchStatus(ctx, base, cert); err != nil {
			return ctrl.Result{}, err
		}
		base = cert.DeepCopy()
	}
	var (
		problems []injectProblem
		injected []string
		keep     []certpilotv1alpha1.InjectedWorkload
	)
	for _, plan := range plans {
		result := plan.result
		if plan.write {
			result = r.writeWorkload(ctx, cert, source, plan)
		}
		problems = append(problems, result.problems...)
		injected = append(injected, result.injected...)
		if result.keep {
			keep = append(keep, plan.workload)
		}
	}
	cert.Status.Injected = keep
	r.setInjectedCondition(cert, problems, injected)
	if err := r.patchStatus(ctx, base, cert); err != nil {
		return ctrl.Result{}, err
	}
	if deleting {
		if len(cert.Status.Injected) > 0 {
			return ctrl.Result{RequeueAfter: injectionRetry}, nil
		}
		return ctrl.Result{}, kube.SetFinalizer(ctx, r.Client, cert, injectFinalizer, false)
	}
	return ctrl.Result{}, nil
}

// usesInjection reports whether a Certificate has anything for the injection controller: entries,
// workloads it may have written into, the condition, or its finalizer.
func usesInjection(cert *certpilotv1alpha1.Certificate) bool {
	return len(cert.Spec.Inject) > 0 || len(cert.Status.Injected) > 0 ||
		meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionInjected) != nil ||
		controllerutil.ContainsFinalizer(cert, injectFinalizer)
}

// patchStatus writes the injection controller's part of the status when it changed. The
// optimistic lock refuses a write based on a copy older than the issuance controller's last
// write (a merge patch replaces the whole conditions list); the next reconcile plans again.
func (r *InjectionReconciler) patchStatus(ctx context.Context, base, cert *certpilotv1alpha1.Certificate) error {
	if equality.Semantic.DeepEqual(base.Status, cert.Status) {
		return nil
	}
	err := r.Status().Patch(ctx, cert, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}),
		client.FieldOwner(injectionStatusManager))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing the injection status of Certificate %s/%s: %w", cert.Namespace, cert.Name, err)
	}
	return nil
}

// injectTarget is one workload with the Certificate's entries for it (none: undo).
type injectTarget struct {
	workload certpilotv1alpha1.InjectedWorkload
	entries  []certpilotv1alpha1.InjectTarget
}

// injectTargets groups entries by workload, in spec order, followed by the workloads recorded
// as injected that no entry lists any more.
func injectTargets(entries []certpilotv1alpha1.InjectTarget, recorded []certpilotv1alpha1.InjectedWorkload) []injectTarget {
	var targets []injectTarget
	index := map[certpilotv1alpha1.InjectedWorkload]int{}
	for _, entry := range entries {
		workload := certpilotv1alpha1.InjectedWorkload{Kind: entry.Kind, Name: entry.Name}
		i, seen := index[workload]
		if !seen {
			i = len(targets)
			index[workload] = i
			targets = append(targets, injectTarget{workload: workload})
		}
		targets[i].entries = append(targets[i].entries, entry)
	}
	for _, workload := range recorded {
		if _, listed := index[workload]; !listed {
			index[workload] = len(targets)
			targets = append(targets, injectTarget{workload: workload})
		}
	}
	return targets
}

// injectSource reads the serial of the certificate in the Secret (from the cache); it is empty
// while there is no certificate certpilot can inject (none issued yet, unreadable, or a Secret
// that is not this Certificate's: the issuance controller reports those).
func (r *InjectionReconciler) injectSource(ctx context.Context, cert *certpilotv1alpha1.Certificate) injectSource {
	source := injectSource{certificate: cert.Name, secretName: cert.Spec.SecretName}
	secret := &corev1.Secret{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, secret); err != nil ||
		!kube.IsManaged(secret) || !controlledBy(secret, cert) || len(secret.Data[certpilotv1alpha1.BundleKey]) == 0 {
		return source
	}
	leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
	if err != nil {
		return source
	}
	source.serial = fmt.Sprintf("%x", leaf.SerialNumber)
	for _, key := range outputKeysOf(cert) {
		if _, ok := secret.Data[key]; ok {
			source.outputKeys = append(source.outputKeys, key)
		}
	}
	return source
}

// setInjectedCondition summarises injection: True when every entry is in place, False with the
// worst reason otherwise, and no condition when nothing is to be injected. A Warning Event
// goes out when a conflict or a failure first appears (or changes), not on every reconcile.
func (r *InjectionReconciler) setInjectedCondition(cert *certpilotv1alpha1.Certificate, problems []injectProblem, injected []string) {
	if len(problems) == 0 {
		if len(cert.Spec.Inject) == 0 || !cert.DeletionTimestamp.IsZero() {
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

// SetupWithManager watches Certificates (their spec, deletion and the certificate they hold),
// their certificate Secrets, and the workloads they inject into (metadata only).
func (r *InjectionReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, options controller.Options) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &certpilotv1alpha1.Certificate{}, injectTargetIndex, injectTargetKeys); err != nil {
		return err
	}
	// Inject targets are watched as metadata only (the cache holds no pod templates); a
	// target created or changed later wakes the Certificates that name it.
	injectTargets := func(b *builder.Builder, kind string, obj client.Object) *builder.Builder {
		return b.Watches(obj, handler.EnqueueRequestsFromMapFunc(r.certificatesInjectingInto(kind)),
			builder.OnlyMetadata, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	}
	b := ctrl.NewControllerManagedBy(mgr)
	for _, kind := range []string{certpilotv1alpha1.InjectKindDeployment, certpilotv1alpha1.InjectKindStatefulSet, certpilotv1alpha1.InjectKindDaemonSet} {
		if r.kindEnabled(kind) {
			b = injectTargets(b, kind, workloadKinds[kind].newObject())
		}
	}
	return b.
		Named("injection").
		For(&certpilotv1alpha1.Certificate{}, builder.WithPredicates(injectionChanges())).
		// A stored or renewed certificate: the Secret's owner is woken.
		Owns(&corev1.Secret{}, builder.WithPredicates(predicate.NewPredicateFuncs(isCertificateSecret))).
		WithOptions(options).
		Complete(r)
}

// isCertificateSecret passes the certificate Secrets a Certificate owns (not its claim).
func isCertificateSecret(obj client.Object) bool {
	_, claim := obj.GetAnnotations()[annotationClaimOf]
	return !claim && obj.GetLabels()[certpilotv1alpha1.LabelCertificate] != ""
}

// injectionChanges passes the Certificate events injection acts on: a Certificate that uses
// injection appearing, its spec changing, its deletion starting, or what the status says it
// injected (or holds) changing.
func injectionChanges() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return usesInjection(e.Object.(*certpilotv1alpha1.Certificate)) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			oldCert, newCert := e.ObjectOld.(*certpilotv1alpha1.Certificate), e.ObjectNew.(*certpilotv1alpha1.Certificate)
			if !usesInjection(oldCert) && !usesInjection(newCert) {
				return false
			}
			return oldCert.Generation != newCert.Generation ||
				oldCert.DeletionTimestamp.IsZero() != newCert.DeletionTimestamp.IsZero() ||
				oldCert.Status.SerialNumber != newCert.Status.SerialNumber ||
				!equality.Semantic.DeepEqual(oldCert.Status.Injected, newCert.Status.Injected)
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
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
func (r *InjectionReconciler) certificatesInjectingInto(kind string) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		return certificatesByIndex(ctx, r.Client, injectTargetIndex, kind+"/"+obj.GetName(), obj.GetNamespace())
	}
}
