package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// TestRenewalInfoDue: the next fetch of a renewal window comes from memory only for the same
// Certificate, the same certificate, and a status nobody changed since; else from the status.
func TestRenewalInfoDue(t *testing.T) {
	now := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	written, later := now.Add(-time.Hour), now.Add(5*time.Hour)
	kept := renewalInfoFetch{uid: "uid-1", serial: "0a", status: written, next: later}
	tests := map[string]struct {
		uid      types.UID
		serial   string
		inStatus *time.Time
		memo     *renewalInfoFetch
		want     time.Time
	}{
		"nothing in memory: the status's time":       {uid: "uid-1", serial: "0a", inStatus: &written, want: written},
		"nothing anywhere: now":                      {uid: "uid-1", serial: "0a"},
		"memory of this certificate wins":            {uid: "uid-1", serial: "0a", inStatus: &written, memo: &kept, want: later},
		"another certificate (renewed): the status":  {uid: "uid-1", serial: "0b", inStatus: &written, memo: &kept, want: written},
		"a Certificate made again: the status":       {uid: "uid-2", serial: "0a", inStatus: &written, memo: &kept, want: written},
		"status changed by someone: the status wins": {uid: "uid-1", serial: "0a", inStatus: &now, memo: &kept, want: now},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := &CertificateReconciler{}
			cert := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "www", UID: tc.uid}}
			if tc.inStatus != nil {
				cert.Status.RenewalInfo = &certpilotv1alpha1.RenewalInfoStatus{NextFetch: &metav1.Time{Time: *tc.inStatus}}
			}
			if tc.memo != nil {
				r.renewalInfoFetches.remember(cert, *tc.memo)
			}
			if got := r.renewalInfoFetches.due(cert, tc.serial); !got.Equal(tc.want) {
				t.Errorf("due = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSameRenewalInfo: a fetch that finds the window, reason and error the status holds is not
// a change; the next fetch time alone is not one either.
func TestSameRenewalInfo(t *testing.T) {
	at := func(h int) *metav1.Time { return &metav1.Time{Time: time.Date(2027, 3, 1, h, 0, 0, 0, time.UTC)} }
	base := certpilotv1alpha1.RenewalInfoStatus{WindowStart: at(1), WindowEnd: at(2), NextFetch: at(3)}
	with := func(change func(*certpilotv1alpha1.RenewalInfoStatus)) *certpilotv1alpha1.RenewalInfoStatus {
		c := base
		change(&c)
		return &c
	}
	tests := map[string]struct {
		a, b *certpilotv1alpha1.RenewalInfoStatus
		want bool
	}{
		"only the next fetch moved": {&base, with(func(c *certpilotv1alpha1.RenewalInfoStatus) { c.NextFetch = at(9) }), true},
		"the window moved":          {&base, with(func(c *certpilotv1alpha1.RenewalInfoStatus) { c.WindowEnd = at(4) }), false},
		"a reason appeared":         {&base, with(func(c *certpilotv1alpha1.RenewalInfoStatus) { c.ExplanationURL = "https://ca.example/incident" }), false},
		"the fetch failed":          {&base, with(func(c *certpilotv1alpha1.RenewalInfoStatus) { c.Error = "429" }), false},
		"nothing in the status yet": {nil, &base, false},
		"no next fetch written yet": {with(func(c *certpilotv1alpha1.RenewalInfoStatus) { c.NextFetch = nil }), &base, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := sameRenewalInfo(tc.a, tc.b); got != tc.want {
				t.Errorf("sameRenewalInfo = %v, want %v", got, tc.want)
			}
		})
	}
}
