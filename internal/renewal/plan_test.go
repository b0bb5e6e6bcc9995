package renewal

import (
	"testing"
	"time"
)

func TestSafeWindow(t *testing.T) {
	notBefore := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter := notBefore.Add(90 * 24 * time.Hour)
	day := func(d float64) time.Time { return notBefore.Add(time.Duration(d * 24 * float64(time.Hour))) }
	tests := map[string]struct {
		window       Window
		want         Window
		wantAtLatest bool
	}{
		"inside the safe part: as given":           {Window{day(60), day(62)}, Window{day(60), day(62)}, false},
		"the whole lifetime: a third to a tenth":   {Window{day(0), day(90)}, Window{day(30), day(81)}, false},
		"reaching past the safe point: cut there":  {Window{day(70), day(95)}, Window{day(70), day(81)}, false},
		"30 s before expiry to a day after":        {Window{notAfter.Add(-30 * time.Second), day(91)}, Window{day(81), day(81)}, true},
		"wholly after expiry: at the safe point":   {Window{day(92), day(93)}, Window{day(81), day(81)}, true},
		"an early renewal (revocation): as given":  {Window{day(2), day(3)}, Window{day(2), day(3)}, false},
		"renew now (revoked, window in the past)":  {Window{day(-1), day(-0.5)}, Window{day(-1), day(-0.5)}, false},
		"early start, ends later: from a third on": {Window{day(10), day(50)}, Window{day(30), day(50)}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, atLatest := SafeWindow(tc.window, notBefore, notAfter)
			if !got.Start.Equal(tc.want.Start) || !got.End.Equal(tc.want.End) || atLatest != tc.wantAtLatest {
				t.Errorf("SafeWindow = [%s, %s) atLatest=%v, want [%s, %s) atLatest=%v", formatTime(got.Start), formatTime(got.End), atLatest,
					formatTime(tc.want.Start), formatTime(tc.want.End), tc.wantAtLatest)
			}
		})
	}
}

func TestSchedule(t *testing.T) {
	notBefore := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	served := Served{NotBefore: notBefore, NotAfter: notBefore.Add(90 * 24 * time.Hour), Serial: []byte{1, 2, 3}}
	day := func(d float64) time.Time { return notBefore.Add(time.Duration(d * 24 * float64(time.Hour))) }
	first := func(int64) int64 { return 0 }
	fallback := FallbackRenewalTime(served.NotBefore, served.NotAfter, DefaultRenewBefore, served.Serial)
	tests := map[string]struct {
		in         ScheduleInput
		want       time.Time
		wantSource string
	}{
		"no window: the jittered fallback":      {ScheduleInput{Served: served}, fallback, SourceFallback},
		"a window: a moment inside it":          {ScheduleInput{Served: served, Window: &Window{day(60), day(62)}, Random: first}, day(60), SourceARI},
		"the previous choice stays inside it":   {ScheduleInput{Served: served, Window: &Window{day(60), day(62)}, Previous: day(61), Random: first}, day(61), SourceARI},
		"a previous choice outside: a new one":  {ScheduleInput{Served: served, Window: &Window{day(60), day(62)}, Previous: day(70), Random: first}, day(60), SourceARI},
		"a window past expiry: the safe point":  {ScheduleInput{Served: served, Window: &Window{day(89.9), day(91)}, Random: first}, day(81), SourceARI},
		"a malformed window: the fallback":      {ScheduleInput{Served: served, Window: &Window{day(62), day(60)}}, fallback, SourceFallback},
		"a window with a missing end: fallback": {ScheduleInput{Served: served, Window: &Window{Start: day(60)}}, fallback, SourceFallback},
		"renewBefore shorter than the default":  {ScheduleInput{Served: Served{NotBefore: served.NotBefore, NotAfter: served.NotAfter}, RenewBefore: 24 * time.Hour}, day(89), SourceFallback},
		"an early renewal window (revocation)":  {ScheduleInput{Served: served, Window: &Window{day(2), day(3)}, Random: first}, day(2), SourceARI},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, source := Schedule(tc.in)
			if !got.Equal(tc.want) || source != tc.wantSource {
				t.Errorf("Schedule = %s (%s), want %s (%s)", formatTime(got), source, formatTime(tc.want), tc.wantSource)
			}
			if !got.Before(tc.in.Served.NotAfter) {
				t.Errorf("Schedule = %s, not before notAfter %s", formatTime(got), formatTime(tc.in.Served.NotAfter))
			}
		})
	}
}
