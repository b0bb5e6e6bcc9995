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

// NextAttempt returns the earliest time issuance may be retried after failedAttempts
// consecutive failures, the last at lastFailure. With no failures it is lastFailure itself,
// which is in the past, so the caller may issue at once; the same holds for a zero lastFailure
// (a status that lost it), which errs on the side of retrying.
func NextAttempt(lastFailure time.Time, failedAttempts int32) time.Time {
	return lastFailure.Add(Backoff(failedAttempts))
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
