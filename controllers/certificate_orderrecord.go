package controllers

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
)

// Where an open order is recorded. A new order is written to the Certificate's claim Secret in
// the write that also stores the private key of its CSR (a create at the first issuance, a patch
// at a renewal), before any challenge response is published and before the order is finalized.
// A controller that dies after that write resumes the order from the claim (restoreOrder), so it
// is never ordered (or issued) twice. The status records the order too whenever a reconcile
// writes the status for a reason of its own (a failure, a wait longer than progressWait, the
// stored certificate): an issuance that goes straight through writes its status once, at the
// end, and every issuance makes one write fewer than if the order had its own status write.
//
// Only a kill between the CA's answer to the new order and the claim write costs an extra
// (never finalized) order.

// annotationOpenOrder is set on a claim Secret that records the open order: the order as JSON
// (openOrder).
const annotationOpenOrder = "certpilot.dev/open-order"

// progressWindow is how long an order only the claim records may go without a status write:
// an issuance that takes longer shows Issuing in the status (and its waits grow from then on).
const progressWindow = 30 * time.Second

// openOrder is an open order as the claim records it (and as this process remembers it before
// the status does): what the status records when the order is created.
type openOrder struct {
	URL         string    `json:"url"`
	DNSNames    []string  `json:"dnsNames"`
	IPAddresses []string  `json:"ipAddresses,omitempty"`
	Created     time.Time `json:"created"`
	// RenewalRequest is the renew annotation's value the order acts on.
	RenewalRequest string `json:"renewalRequest,omitempty"`
}

// openOrderOf is the open order of the status (in memory) as the claim records it.
func openOrderOf(run *certificateRun) openOrder {
	return openOrder{URL: run.cert.Status.Order.URL, DNSNames: slices.Clone(run.cert.Status.Order.DNSNames),
		IPAddresses: slices.Clone(run.cert.Status.Order.IPAddresses),
		Created:     run.orderCreated, RenewalRequest: run.cert.Status.RenewalRequest}
}

// unrecordedOrder is an order this process created that the status does not record yet.
type unrecordedOrder struct {
	uid   types.UID
	order openOrder
	// inClaim is set once the claim records the order: only the status write is outstanding.
	inClaim bool
}

// orderRecords keeps the open order where the next reconcile, or another replica, finds it: the
// claim Secret, and in memory until the claim write lands.
type orderRecords struct {
	claims claimStore
	// unrecorded holds, per Certificate, an order created that the status does not record yet.
	unrecorded *sync.Map
}

// restoreOrder puts into the status (for this reconcile; it is written when the status is) the
// open order the written status does not know yet: the one this process created (its claim write
// may have failed, or the cache may not have seen it), else the one the Certificate's claim
// records for the next revision. The claim always holds the newest order, so it wins over an
// older order the status records.
func (rec orderRecords) restoreOrder(ctx context.Context, run *certificateRun) (ctrl.Result, error) {
	cert := run.cert
	key := client.ObjectKeyFromObject(cert)
	if value, ok := rec.unrecorded.Load(key); ok {
		kept := value.(unrecordedOrder)
		if current := cert.Status.Order; kept.uid != cert.UID || (current != nil && current.URL == kept.order.URL) {
			rec.unrecorded.Delete(key) // another Certificate of that name, or written since
		} else {
			ctrl.LoggerFrom(ctx).V(1).Info("Resuming an order the status does not record yet", "order", kept.order.URL, "inClaim", kept.inClaim)
			run.resume(kept.order)
			run.orderUnrecorded = !kept.inClaim
			if kept.inClaim {
				run.claimOrder = kept.order.URL
			}
			return ctrl.Result{}, nil
		}
	}
	claim := rec.claims.cached(ctx, run)
	if claim == nil || claim.Annotations[annotationKeyRevision] != nextKeyRevision(cert) {
		return ctrl.Result{}, nil
	}
	var order openOrder
	if err := json.Unmarshal([]byte(claim.Annotations[annotationOpenOrder]), &order); err != nil || order.URL == "" ||
		(cert.Status.Order != nil && cert.Status.Order.URL == order.URL) {
		return ctrl.Result{}, nil
	}
	ctrl.LoggerFrom(ctx).Info("Resuming the order recorded in the claim Secret", "order", order.URL, "claim", claim.Name)
	run.resume(order)
	run.claimOrder = order.URL
	return ctrl.Result{}, nil
}

// resume makes order the open order of this reconcile, as if the status recorded it.
func (run *certificateRun) resume(order openOrder) {
	run.cert.Status.Order = &certpilotv1alpha1.OrderStatus{URL: order.URL, State: acme.StatusPending,
		DNSNames: slices.Clone(order.DNSNames), IPAddresses: slices.Clone(order.IPAddresses)}
	if order.RenewalRequest != "" {
		run.cert.Status.RenewalRequest = order.RenewalRequest
	}
	run.orderCreated = order.Created
}

// recordOrder makes the open order durable before any challenge response is published and
// before it is finalized: it writes the order into the claim Secret together with the key of
// the certificate to come (creating the claim when there is none). Presenting and finalizing call
// it again, for an order restored from memory whose write had failed.
func (rec orderRecords) recordOrder(ctx context.Context, run *certificateRun) error {
	if !run.orderUnrecorded {
		return nil
	}
	claim, err := rec.claims.claim(ctx, run)
	if err != nil {
		return err
	}
	if !claimRecordsOrder(claim, run.cert) {
		if _, err := rec.claims.update(ctx, run, claim); err != nil {
			return err
		}
	}
	run.orderUnrecorded = false
	run.claimOrder = run.cert.Status.Order.URL
	rec.unrecorded.Store(client.ObjectKeyFromObject(run.cert), unrecordedOrder{uid: run.cert.UID, order: openOrderOf(run), inClaim: true})
	return nil
}

// abandonOrder drops the open order (the spec went back to what the Secret holds, or the CA's
// account was registered again): from the status, and from the claim when it records it, so
// that the next reconcile does not resume it.
func (rec orderRecords) abandonOrder(ctx context.Context, run *certificateRun) error {
	order := run.cert.Status.Order
	run.cert.Status.Order, run.orderUnrecorded, run.claimOrder = nil, false, ""
	rec.unrecorded.Delete(client.ObjectKeyFromObject(run.cert))
	if order == nil {
		return nil
	}
	if claim := rec.claims.cached(ctx, run); claim != nil && claimOrderURL(claim) == order.URL {
		if _, err := rec.claims.update(ctx, run, claim); err != nil {
			return err
		}
	}
	return nil
}

// claimRecordsOrder reports whether claim holds the key of the next revision and records the
// Certificate's open order.
func claimRecordsOrder(claim *corev1.Secret, cert *certpilotv1alpha1.Certificate) bool {
	return orderOpen(cert) && claim.Annotations[annotationKeyRevision] == nextKeyRevision(cert) &&
		claimOrderURL(claim) == cert.Status.Order.URL
}

// claimOrderURL is the URL of the open order the claim records ("" when none).
func claimOrderURL(claim *corev1.Secret) string {
	var order openOrder
	if err := json.Unmarshal([]byte(claim.Annotations[annotationOpenOrder]), &order); err != nil {
		return ""
	}
	return order.URL
}

// setOpenOrder records the open order in claim's annotations, or removes the record when there
// is none.
func setOpenOrder(claim *corev1.Secret, run *certificateRun) {
	if !orderOpen(run.cert) {
		delete(claim.Annotations, annotationOpenOrder)
		return
	}
	value, _ := json.Marshal(openOrderOf(run))
	claim.Annotations[annotationOpenOrder] = string(value)
}
