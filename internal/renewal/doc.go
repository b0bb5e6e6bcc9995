// Package renewal decides when a certificate is issued, renewed and retried.
//
// Everything here is a pure function of its arguments: the current time is passed in (never
// read from the clock) and randomness is injected, so the controller can be tested with a fake
// clock and every decision can be checked with a table test. The package imports nothing from
// Kubernetes; the controller translates its API objects into these plain values.
package renewal
