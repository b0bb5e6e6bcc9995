package source

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestGatewayDetector(t *testing.T) {
	for name, tc := range map[string]struct {
		answers   []bool
		errs      []error
		wantSetup bool
	}{
		"served at start":            {answers: []bool{true}, wantSetup: true},
		"served later":               {answers: []bool{false, false, true}, wantSetup: true},
		"discovery fails, then true": {answers: []bool{false, true}, errs: []error{errors.New("timeout"), nil}, wantSetup: true},
		"never served":               {answers: []bool{false, false, false}},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			asked := 0
			setups := 0
			d := &gatewayDetector{
				interval: time.Millisecond,
				served: func() (bool, error) {
					i := min(asked, len(tc.answers)-1)
					asked++
					if asked >= len(tc.answers)+2 {
						cancel() // never served: stop after a few looks
					}
					var err error
					if i < len(tc.errs) {
						err = tc.errs[i]
					}
					return tc.answers[i] && err == nil, err
				},
				setup: func(context.Context) error { setups++; return nil },
			}
			if err := d.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.wantSetup]; setups != want {
				t.Errorf("setup ran %d times, want %d", setups, want)
			}
			if d.NeedLeaderElection() {
				t.Error("the detector waits for leader election; every replica should set the controller up")
			}
		})
	}
}
