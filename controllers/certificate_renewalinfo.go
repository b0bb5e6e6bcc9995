package controllers

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/renewal"
)

// renewalSchedule returns the renewal time of leaf and where it came from (renewal.Schedule):
// inside the CA's window in the status when there is a usable one (the moment already chosen
// stays while it is inside the window), otherwise the jittered fallback.
func renewalSchedule(status *certpilotv1alpha1.CertificateStatus, leaf *x509.Certificate, renewBefore time.Duration) (time.Time, string) {
	in := renewal.ScheduleInput{
		Served:      renewal.Served{NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Serial: leaf.SerialNumber.Bytes()},
		RenewBefore: renewBefore,
	}
	if info := status.RenewalInfo; info != nil && info.WindowStart != nil && info.WindowEnd != nil {
		in.Window = &renewal.Window{Start: info.WindowStart.Time, End: info.WindowEnd.Time}
	}
	if status.RenewalTimeSource == renewal.SourceARI && status.RenewalTime != nil {
		in.Previous = status.RenewalTime.Time
	}
	return renewal.Schedule(in)
}

// refreshRenewalInfo asks the CA of issuer, the certificate's, for its renewal window (RFC 9773), when the issuer
// has not turned ARI off and the server publishes it (decideIssuance says when it is due), and
// records the window and the next fetch. A failure never blocks renewal: it is recorded, the fallback time stands,
// and the fetch is tried again later (after the CA's Retry-After, or an hour).
//
// Most fetches find the window the status holds already. Those are not written: the next fetch
// is kept in memory (renewalInfoFetches) and the status keeps the time written with the last
// change, so a certificate costs a status write per change of its window, not per poll. After a
// restart the status's time stands, so every certificate is asked once more.
func (ri renewalInfoSteps) refreshRenewalInfo(ctx context.Context, run *certificateRun, issuer certpilotv1alpha1.GenericIssuer, leaf *x509.Certificate) {
	ri.record(ctx, run, leaf, ri.fetch(ctx, run, issuer, leaf))
}

// prefetch starts refreshRenewalInfo's request in the background, so that it goes out beside
// another (the certificate Secret's write), and returns what records its answer.
func (ri renewalInfoSteps) prefetch(ctx context.Context, run *certificateRun, issuer certpilotv1alpha1.GenericIssuer, leaf *x509.Certificate) func(context.Context, *certificateRun) {
	answer := make(chan renewalWindowAnswer, 1)
	go func() { answer <- ri.fetch(ctx, run, issuer, leaf) }()
	return func(ctx context.Context, run *certificateRun) { ri.record(ctx, run, leaf, <-answer) }
}

// renewalWindowAnswer is what a fetch of a renewal window found.
type renewalWindowAnswer struct {
	// skip: nothing to fetch (no issuer, the issuer turned ARI off, the server publishes none).
	skip bool
	// unusable: the issuer's client could not be made now; nothing changes.
	unusable bool
	info     *acme.RenewalInfo
	err      error
}

// fetch asks the CA for leaf's renewal window. It reads run and changes nothing.
func (ri renewalInfoSteps) fetch(ctx context.Context, run *certificateRun, issuer certpilotv1alpha1.GenericIssuer, leaf *x509.Certificate) renewalWindowAnswer {
	if issuer == nil || issuer.GetSpec().ACME.DisableRenewalInfo {
		return renewalWindowAnswer{skip: true}
	}
	var client *acme.Client
	var err error
	if issuer == run.issuer {
		client, err = issuerClient(ctx, ri.accounts, run)
	} else {
		client, err = ri.accounts.Client(ctx, issuer) // the served certificate came from a fallback issuer
	}
	if err != nil {
		return renewalWindowAnswer{unusable: true} // the issuer is not usable now; its recovery wakes the Certificate
	}
	if !client.SupportsRenewalInfo() {
		return renewalWindowAnswer{skip: true}
	}
	info, err := client.RenewalInfo(ctx, leaf)
	return renewalWindowAnswer{info: info, err: err}
}

// record writes what fetch found into run's status and remembers the next fetch.
func (ri renewalInfoSteps) record(ctx context.Context, run *certificateRun, leaf *x509.Certificate, answer renewalWindowAnswer) {
	status := &run.cert.Status
	switch {
	case answer.skip:
		status.RenewalInfo = nil
		return
	case answer.unusable:
		return
	}
	serial := fmt.Sprintf("%x", leaf.SerialNumber)
	previous := status.RenewalInfo
	fetched := &certpilotv1alpha1.RenewalInfoStatus{}
	if err := answer.err; err != nil {
		wait, _ := acme.RetryAfterOf(err)
		if wait == 0 {
			wait = time.Hour
		}
		fetched.NextFetch = timePtr(renewal.NextRenewalInfoFetch(run.now, wait))
		fetched.Error = truncate(err.Error(), 1024)
		if previous != nil { // keep the last window the CA gave: it is still the CA's word
			fetched.WindowStart, fetched.WindowEnd, fetched.ExplanationURL = previous.WindowStart, previous.WindowEnd, previous.ExplanationURL
		}
		ctrl.LoggerFrom(ctx).V(1).Info("Fetching the renewal window failed; the fallback renewal time stands", "error", err.Error())
	} else {
		info := answer.info
		fetched.WindowStart = &metav1.Time{Time: info.WindowStart.Truncate(time.Second)}
		fetched.WindowEnd = &metav1.Time{Time: info.WindowEnd.Truncate(time.Second)}
		fetched.ExplanationURL = truncate(info.ExplanationURL, 2048)
		fetched.NextFetch = timePtr(renewal.NextRenewalInfoFetch(run.now, info.RetryAfter))
	}
	if !sameRenewalInfo(previous, fetched) {
		status.RenewalInfo = fetched
	}
	var written time.Time
	if status.RenewalInfo != nil && status.RenewalInfo.NextFetch != nil {
		written = status.RenewalInfo.NextFetch.Time
	}
	ri.fetches.remember(run.cert, renewalInfoFetch{uid: run.cert.UID, serial: serial, status: written, next: fetched.NextFetch.Time})
}

// renewalInfoSteps fetches the CA's renewal window (ARI) of the current certificate.
type renewalInfoSteps struct {
	accounts *Accounts
	fetches  *renewalInfoFetches
}

// renewalInfoFetch is the next renewalInfo fetch of a Certificate's current certificate, kept in
// memory when it is later than the one in the status.
type renewalInfoFetch struct {
	uid    types.UID
	serial string
	// status is status.renewalInfo.nextFetch when next was set: a status someone else changed
	// since (to ask for a fetch now, say) wins over memory.
	status time.Time
	next   time.Time
}

// renewalInfoFetches holds, per Certificate, the next fetch of its current certificate's renewal
// window when no status write recorded it (refreshRenewalInfo). Its zero value is ready to use.
type renewalInfoFetches struct{ fetches sync.Map }

// remember keeps the next fetch of cert's window.
func (m *renewalInfoFetches) remember(cert *certpilotv1alpha1.Certificate, fetch renewalInfoFetch) {
	m.fetches.Store(client.ObjectKeyFromObject(cert), fetch)
}

// forget drops what is kept of a Certificate that is gone.
func (m *renewalInfoFetches) forget(key types.NamespacedName) { m.fetches.Delete(key) }

// due returns when the window of cert's certificate serial is fetched next: the time kept in
// memory for this certificate, else the status's (zero: now).
func (m *renewalInfoFetches) due(cert *certpilotv1alpha1.Certificate, serial string) time.Time {
	var inStatus time.Time
	if info := cert.Status.RenewalInfo; info != nil && info.NextFetch != nil {
		inStatus = info.NextFetch.Time
	}
	value, ok := m.fetches.Load(client.ObjectKeyFromObject(cert))
	if !ok {
		return inStatus
	}
	kept := value.(renewalInfoFetch)
	if kept.uid != cert.UID || kept.serial != serial || !kept.status.Equal(inStatus) {
		return inStatus
	}
	return kept.next
}

// sameRenewalInfo reports whether a fetch found what the status holds: the same window, reason
// and error (the next fetch time aside).
func sameRenewalInfo(a, b *certpilotv1alpha1.RenewalInfoStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	return equalTime(a.WindowStart, b.WindowStart) && equalTime(a.WindowEnd, b.WindowEnd) &&
		a.ExplanationURL == b.ExplanationURL && a.Error == b.Error && a.NextFetch != nil
}

func equalTime(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Time.Equal(b.Time)
}

// replacesFor returns the certificate ID the new order names in `replaces` (RFC 9773 section
// 5): the current certificate, when it came from this server and account and the issuer uses
// ARI; "" otherwise.
func replacesFor(run *certificateRun) string {
	if run.observed.secret == nil || run.issuer.GetSpec().ACME.DisableRenewalInfo || !run.acme.SupportsRenewalInfo() {
		return ""
	}
	in := renewalInput(run.now, run.cert, run.issuer, run.observed.secret)
	if !renewal.CanReplace(in, run.acme.AccountURI()) {
		return ""
	}
	leaf, err := pki.ParseLeaf(in.Secret.CertificatePEM)
	if err != nil {
		return ""
	}
	id, err := acme.CertID(leaf)
	if err != nil {
		return ""
	}
	return id
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
