package kube

import (
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

func TestCapVerbosity(t *testing.T) {
	var lines []string
	logger := funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{Verbosity: 10})
	capped := CapVerbosity(logger, 6).WithName("client-go").WithValues("k", "v")
	capped.V(6).Info("URL")
	capped.V(7).Info("Request Headers")
	capped.V(8).Info("Response Body")
	capped.Error(nil, "failed")
	if capped.V(7).Enabled() || !capped.V(6).Enabled() {
		t.Errorf("V(7) enabled %v, V(6) enabled %v; want false, true", capped.V(7).Enabled(), capped.V(6).Enabled())
	}
	got := strings.Join(lines, "\n")
	if len(lines) != 2 || !strings.Contains(got, `"URL"`) || !strings.Contains(got, `"failed"`) || !strings.Contains(got, "client-go") {
		t.Errorf("logged:\n%s\nwant the V(6) line and the error only, named client-go", got)
	}
}
