package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// resultOf turns a step's error into what controller-runtime should do: stalled errors wait for a
// change (with a slow safety recheck), wait errors requeue after their delay, other errors go to
// the rate limiter's exponential backoff.
func resultOf(ctx context.Context, err error) (ctrl.Result, error) {
	if err == nil {
		return ctrl.Result{}, nil
	}
	if s, ok := asStalled(err); ok {
		ctrl.LoggerFrom(ctx).Info("Stalled until the spec or a referenced object changes", "reason", s.Reason, "message", s.Message)
		if s.After > 0 {
			return ctrl.Result{RequeueAfter: s.After}, nil
		}
		return ctrl.Result{RequeueAfter: stalledRecheck}, nil
	}
	if w, ok := asWait(err); ok {
		return ctrl.Result{RequeueAfter: w.After}, nil
	}
	return ctrl.Result{}, err
}

var _ reconcile.Reconciler = &IssuerReconciler{}
