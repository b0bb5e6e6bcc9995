package kube

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// SetFinalizer adds (present) or removes a finalizer of obj. The patch carries obj's
// resourceVersion (optimistic locking): a merge patch replaces the whole finalizers list, so
// without it a finalizer another controller added meanwhile would be dropped; a conflict is
// returned for the caller's next reconcile. The patch goes to a copy, so that an in-memory status
// being built in obj is not replaced by the server's; obj gets the new finalizers and
// resourceVersion. A deleted object is not an error.
func SetFinalizer(ctx context.Context, c client.Client, obj client.Object, finalizer string, present bool) error {
	if controllerutil.ContainsFinalizer(obj, finalizer) == present {
		return nil
	}
	updated := obj.DeepCopyObject().(client.Object)
	if present {
		controllerutil.AddFinalizer(updated, finalizer)
	} else {
		controllerutil.RemoveFinalizer(updated, finalizer)
	}
	base := obj.DeepCopyObject().(client.Object)
	if err := c.Patch(ctx, updated, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("updating the finalizers of %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	obj.SetFinalizers(updated.GetFinalizers())
	obj.SetResourceVersion(updated.GetResourceVersion())
	return nil
}
