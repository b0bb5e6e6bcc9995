package testcluster

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
)

// The node's fixed names and ranges. One cluster runs on a machine at a time.
const (
	// Bridge is the pods' bridge; its address is the node's address.
	Bridge = "certpilot0"
	// BridgeIP is the host's address on the bridge: the node IP, where the apiserver, the
	// kubelet and test servers (Pebble) listen for pods.
	BridgeIP = "10.213.0.1"
	// Registry is the image registry's host:port (plain HTTP, on the bridge address): Up pushes
	// Options.Images there and the node's containerd pulls from it.
	Registry = BridgeIP + ":5000"
	// PodCIDR is the pods' range on the bridge.
	PodCIDR = "10.213.0.0/24"
	// ServiceCIDR is the Services' range; 10.214.0.1 is the kubernetes Service.
	ServiceCIDR = "10.214.0.0/24"
	// NodeName is the name the kubelet registers.
	NodeName = "certpilot-node"
	// forwardChain holds the rule that keeps forwarded traffic on the bridge.
	forwardChain = "CERTPILOT-CLUSTER"
	// cgroupRoot is the kubelet's cgroupRoot: every pod cgroup lives under it.
	cgroupRoot = "certpilot-cluster"
	// runDir holds containerd's socket and state, and runc's state.
	runDir = "/run/certpilot-cluster"
)

// setUpNetwork creates the bridge with the node's address, a route to the Service range through
// it, forwarding on the bridge only, and the rule that drops what would leave it for another
// interface.
func setUpNetwork() error {
	steps := [][]string{
		{"ip", "link", "add", Bridge, "type", "bridge"},
		{"ip", "addr", "add", BridgeIP + "/24", "dev", Bridge},
		{"ip", "link", "set", Bridge, "up"},
		{"ip", "route", "add", ServiceCIDR, "dev", Bridge, "src", BridgeIP},
		{"iptables", "-w", "-N", forwardChain},
		{"iptables", "-w", "-A", forwardChain, "-i", Bridge, "!", "-o", Bridge, "-j", "DROP",
			"-m", "comment", "--comment", "certpilot test cluster: pod traffic stays on the bridge"},
		{"iptables", "-w", "-I", "FORWARD", "1", "-j", forwardChain},
	}
	for _, step := range steps {
		if err := run(step...); err != nil {
			return err
		}
	}
	// Forwarding on the bridge alone: a packet from a pod to a Service whose endpoint is another
	// pod is routed back onto the bridge. The machine's other interfaces are left as they are.
	return os.WriteFile("/proc/sys/net/ipv4/conf/"+Bridge+"/forwarding", []byte("1"), 0o644)
}

// tearDownNetwork removes the forward rule, its chain and the bridge (with its address and
// route). Missing pieces are not errors.
func tearDownNetwork() []error {
	var errs []error
	for run("iptables", "-w", "-D", "FORWARD", "-j", forwardChain) == nil {
	}
	if chainExists("filter", forwardChain) {
		if err := run("iptables", "-w", "-F", forwardChain); err != nil {
			errs = append(errs, err)
		}
		if err := run("iptables", "-w", "-X", forwardChain); err != nil {
			errs = append(errs, err)
		}
	}
	if bridgeExists() {
		if err := run("ip", "link", "del", Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func bridgeExists() bool {
	_, err := net.InterfaceByName(Bridge)
	return err == nil
}

// chainExists says whether an iptables chain exists in a table.
func chainExists(table, chain string) bool {
	return exec.Command("iptables", "-w", "-t", table, "-n", "-L", chain).Run() == nil
}

// builtinChains exist in every table once iptables touched it: an empty one is no leftover.
var builtinChains = map[string]bool{"INPUT": true, "FORWARD": true, "OUTPUT": true, "PREROUTING": true, "POSTROUTING": true}

// chains lists the chains other than the built-in ones of every iptables table, as
// "table/chain".
func chains() ([]string, error) {
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save: %w", err)
	}
	var list []string
	table := ""
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			if chain := strings.Fields(line[1:])[0]; !builtinChains[chain] {
				list = append(list, table+"/"+chain)
			}
		}
	}
	return list, nil
}

// run runs a command and returns its output in the error when it fails.
func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
