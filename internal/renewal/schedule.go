package renewal

import "time"

// backoffSteps are the waits after the first, second and third consecutive failures; from the
// fourth on the wait is MaxBackoff. These are the intervals Let's Encrypt's integration guide
// recommends (1 minute, 10 minutes, 100 minutes, then daily): quick enough to ride out a
// transient error, slow enough that a permanent one does not burn the CA's rate limits (5
// failed validations per hostname per hour).
var backoffSteps = [...]time.Duration{time.Minute, 10 * time.Minute, 100 * time.Minute}

// MaxBackoff is the wait between attempts once a certificate has failed four times in a row.
const MaxBackoff = 24 * time.Hour

// Backoff returns how long to wait after failedAttempts consecutive issuance failures: 0 when
// there were none, then 1m, 10m, 100m and 24h for every further attempt. It is a lookup, not an
// exponentiation, so huge counts cannot overflow.
func Backoff(failedAttempts int32) time.Duration {
	if failedAttempts <= 0 {
		return 0
	}
	if int(failedAttempts) <= len(backoffSteps) {
		return backoffSteps[failedAttempts-1]
	}
	return MaxBackoff
}

// MaxRequeueAfter caps how long a healthy certificate waits before it is looked at again.
//
// controller-runtime handles long requeues, but a daily re-check is cheap (a pure decision on
// cached objects) and bounds the damage of anything a watch cannot see: a node clock that
// jumped, a suspended VM whose monotonic timers stopped, a renewal time computed by an older
// version of this package.
const MaxRequeueAfter = 24 * time.Hour

// RequeueAfter returns how long to wait, from now, before the certificate needs attention
// again at renewalTime, capped at MaxRequeueAfter.
//
// It returns 0 when renewalTime is now or past, and 0 means "issue now", not "requeue": the
// caller issues (or retries) in this reconcile instead of requeueing. This matters because
// controller-runtime reads RequeueAfter: 0 as "do not requeue", and because a small positive
// minimum would only turn an overdue renewal into a one-second polling loop.
func RequeueAfter(now, renewalTime time.Time) time.Duration {
	wait := renewalTime.Sub(now)
	if wait <= 0 {
		return 0
	}
	return min(wait, MaxRequeueAfter)
}

// ExpiredRetry is the longest wait between attempts once the served certificate has expired.
const ExpiredRetry = time.Hour

// RetryTime returns the earliest time issuance may be retried after failedAttempts consecutive
// failures, the last at lastFailure, for a certificate that expires at notAfter (zero when
// there is none yet). It is Backoff's wait (1m, 10m, 100m, then daily), with two
// corrections:
//
//   - It never waits more than half the time left before notAfter (but at least the first
//     step, a minute), so a certificate close to expiry gets retry after retry, each closer
//     together, instead of expiring during a daily wait when a retry could still have worked.
//     Once the certificate has expired, the wait is at most ExpiredRetry: what is served is
//     broken already, and an hourly try costs one of the CA's five failed validations per name
//     and hour at most.
//   - It waits at least serverRetryAfter (capped at MaxBackoff), the wait the CA asked for when
//     it refused for load or rate limits (acme.RetryAfterOf): retrying earlier would only be
//     refused again, and the CA's word wins over the expiry cap.
func RetryTime(lastFailure time.Time, failedAttempts int32, serverRetryAfter time.Duration, notAfter time.Time) time.Time {
	wait := Backoff(failedAttempts)
	if left := notAfter.Sub(lastFailure); !notAfter.IsZero() && left > 0 {
		wait = min(wait, max(left/2, backoffSteps[0]))
	} else if !notAfter.IsZero() {
		wait = min(wait, ExpiredRetry)
	}
	wait = max(wait, min(serverRetryAfter, MaxBackoff))
	return lastFailure.Add(wait)
}

// NextEvaluation returns the earliest of moments strictly after now: the next time a
// certificate's status changes by the passage of time alone, so that Ready (and the rest of the
// status) is never stale. Pass notBefore (NotYetValid becomes Valid), notAfter (Valid becomes
// Expired), the renewal time (the certificate becomes due), and, where they apply, the next
// renewal information fetch (NextRenewalInfoFetch) and the next retry (RetryTime). Zero
// moments are ignored.
//
// It returns the zero time when no moment is after now; the controller then requeues after
// MaxRequeueAfter at most. Otherwise it requeues after RequeueAfter(now, next), which is
// positive and capped at MaxRequeueAfter.
func NextEvaluation(now time.Time, moments ...time.Time) time.Time {
	var next time.Time
	for _, moment := range moments {
		if moment.After(now) && (next.IsZero() || moment.Before(next)) {
			next = moment
		}
	}
	return next
}
