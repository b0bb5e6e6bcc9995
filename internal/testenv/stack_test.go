package testenv

import (
	"slices"
	"testing"
)

func TestWithFreshPorts(t *testing.T) {
	args := []string{"--kubeconfig", "k", "--metrics-bind-address", "127.0.0.1:1", "--health-probe-bind-address", "127.0.0.1:2", "--zap-log-level", "debug"}
	fresh, err := withFreshPorts(args)
	if err != nil {
		t.Fatal(err)
	}
	if len(fresh) != len(args) {
		t.Fatalf("got %v, want as many arguments as %v", fresh, args)
	}
	for i, arg := range args {
		changed := fresh[i] != arg
		if want := i == 3 || i == 5; changed != want {
			t.Errorf("argument %d: %q became %q (want changed: %v)", i, arg, fresh[i], want)
		}
	}
	if !slices.Equal(args[:3], fresh[:3]) {
		t.Errorf("the arguments before the first port changed: %v", fresh[:3])
	}
}
