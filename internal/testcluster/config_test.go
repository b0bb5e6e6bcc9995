package testcluster

import (
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
)

// containerd pulls from the cluster's registry over plain HTTP only when its CRI plugin reads the
// hosts.toml directory and the file has a host table (containerd 1.6 rejects it otherwise and
// tries HTTPS).
func TestContainerdPullsFromTheRegistryOverHTTP(t *testing.T) {
	var config struct {
		Plugins map[string]struct {
			Registry struct {
				ConfigPath string `toml:"config_path"`
			} `toml:"registry"`
		} `toml:"plugins"`
	}
	if _, err := toml.Decode(containerdConfig("/state"), &config); err != nil {
		t.Fatal(err)
	}
	if got, want := config.Plugins["io.containerd.grpc.v1.cri"].Registry.ConfigPath, filepath.Join("/state", "certs.d"); got != want {
		t.Errorf("CRI registry config_path = %q, want %q", got, want)
	}

	var hosts struct {
		Server string `toml:"server"`
		Host   map[string]struct {
			Capabilities []string `toml:"capabilities"`
		} `toml:"host"`
	}
	if _, err := toml.Decode(registryHosts(), &hosts); err != nil {
		t.Fatal(err)
	}
	if hosts.Server != "http://"+Registry {
		t.Errorf("server = %q, want http://%s", hosts.Server, Registry)
	}
	host, ok := hosts.Host["http://"+Registry]
	if !ok {
		t.Fatalf("no host table for http://%s: %v", Registry, hosts.Host)
	}
	if len(host.Capabilities) != 2 || host.Capabilities[0] != "pull" || host.Capabilities[1] != "resolve" {
		t.Errorf("capabilities = %v, want [pull resolve]", host.Capabilities)
	}
}
