package testcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certpilot/certpilot/internal/testenv"
)

// Down stops the cluster and removes what it left (Cleanup). The order matters: the controllers
// go first so that no pod is recreated, the pods are deleted while the kubelet still runs (it
// tears down their network and mounts), the apiserver stops before etcd (it hangs otherwise).
func (c *Cluster) Down() error {
	c.step("tearing down")
	for _, p := range c.procs {
		c.byName[p.name] = p
	}
	stop := func(name string, grace time.Duration) {
		if p := c.byName[name]; p != nil {
			p.stop(grace)
		}
	}
	stop("kube-controller-manager", 5*time.Second)
	stop("kube-scheduler", 5*time.Second)
	if c.Config != nil && c.byName["kubelet"] != nil && c.exited(c.byName["kubelet"]) == nil {
		c.deletePods(30 * time.Second)
	}
	stop("kubelet", 10*time.Second)
	removeContainers()
	stop("kube-proxy", 5*time.Second)
	stop("kube-apiserver", 15*time.Second)
	stop("etcd", 10*time.Second)
	stop("containerd", 10*time.Second)
	stop("registry", 5*time.Second)
	stop("named", 5*time.Second)
	return Cleanup(c.Dir)
}

// deletePods deletes every pod at once and waits until containerd runs no task, so that the
// kubelet releases each pod's network namespace, address and volumes.
func (c *Cluster) deletePods(timeout time.Duration) {
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	namespaces, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	zero := int64(0)
	for _, ns := range namespaces.Items {
		_ = client.CoreV1().Pods(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	}
	for ctx.Err() == nil {
		out, err := exec.CommandContext(ctx, "ctr", "--address", containerdSocket, "-n", "k8s.io", "tasks", "ls", "-q").Output()
		if err != nil || strings.TrimSpace(string(out)) == "" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// removeContainers kills and deletes whatever tasks and containers containerd still has.
func removeContainers() {
	ctr := func(args ...string) string {
		out, _ := exec.Command("ctr", append([]string{"--address", containerdSocket, "-n", "k8s.io"}, args...)...).Output()
		return string(out)
	}
	for _, id := range strings.Fields(ctr("tasks", "ls", "-q")) {
		ctr("tasks", "kill", "-s", "SIGKILL", id)
	}
	for _, id := range strings.Fields(ctr("tasks", "ls", "-q")) {
		ctr("tasks", "delete", "-f", id)
	}
	for _, id := range strings.Fields(ctr("containers", "ls", "-q")) {
		ctr("containers", "delete", id)
	}
}

// Cleanup removes what a cluster in dir left on the machine, whether its harness stopped it or
// crashed: its processes and the pods' processes, mounts, network namespaces, the iptables chains
// that kube-proxy and the kubelet added, the bridge, cgroups and runtime state. It keeps
// dir/logs. It is safe to run when nothing is left.
func Cleanup(dir string) error {
	dir, err := resolve(dir)
	if err != nil {
		return err
	}
	base, baseErr := readBaseline(dir)
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	keep(killOwnProcesses(dir))
	keep(killCgroupProcesses())
	if bin, err := kubeProxyBinary(); err == nil {
		// Removes the chains and rules of every kube-proxy mode.
		_ = exec.Command(bin, "--cleanup").Run()
	}
	keep(unmountUnder(dir, runDir))
	if baseErr == nil {
		keep(removeNetns(base.Netns))
		keep(removeChains(base.Chains))
	}
	for _, err := range tearDownNetwork() {
		keep(err)
	}
	keep(removeCgroups())
	keep(removeContainerLogLinks(dir))
	keep(os.RemoveAll(runDir))
	if baseErr == nil {
		for _, p := range hostPaths {
			if !slices.Contains(base.HostPaths, p) {
				keep(os.RemoveAll(p))
			}
		}
	}
	// The CNI plugins' cached results of the cluster's network, when /var/lib/cni was there before.
	results, _ := filepath.Glob("/var/lib/cni/results/certpilot-cluster-*")
	for _, r := range results {
		keep(os.Remove(r))
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "logs" {
			keep(os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// hostPaths are the directories that containerd (its shims' sockets under /run/containerd/s),
// the CNI library (its result cache) and the kubelet (its device-plugin socket, its container log
// links) create at fixed places whatever their configuration. Cleanup removes those that did not
// exist before the cluster started.
var hostPaths = []string{"/run/containerd", "/var/lib/cni", "/var/lib/kubelet", "/var/log/containers"}

func existingHostPaths() []string {
	var found []string
	for _, p := range hostPaths {
		if exists(p) {
			found = append(found, p)
		}
	}
	return found
}

// kubeProxyBinary is bin/k8s/kube-proxy.
func kubeProxyBinary() (string, error) {
	bin, err := testenv.BinDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(bin, "k8s", "kube-proxy")
	if !exists(p) {
		return "", os.ErrNotExist
	}
	return p, nil
}

// CleanupAndCheck is Cleanup followed by Leftovers against what the machine had when the cluster
// in dir started: `make cluster-down` reports anything that is still there.
func CleanupAndCheck(dir string) error {
	resolved, err := resolve(dir)
	if err != nil {
		return err
	}
	base, baseErr := readBaseline(resolved)
	if err := Cleanup(dir); err != nil {
		return err
	}
	if baseErr != nil {
		return nil // nothing was started there, or a Cleanup already ran
	}
	before := base.Chains
	for _, ns := range base.Netns {
		before = append(before, "netns/"+ns)
	}
	for _, p := range base.HostPaths {
		before = append(before, "path/"+p)
	}
	if left := Leftovers(dir, before); len(left) > 0 {
		return fmt.Errorf("still on the machine after the teardown: %s", strings.Join(left, "; "))
	}
	return nil
}

// Leftovers lists what a cluster in dir left on the machine compared with before it started:
// processes, mounts, network namespaces, iptables chains, the bridge, cgroups, runtime state.
// Empty after a clean Down.
func Leftovers(dir string, before []string) []string {
	dir, _ = resolve(dir)
	var left []string
	for pid, args := range ownProcesses(dir) {
		left = append(left, fmt.Sprintf("process %d: %s", pid, args))
	}
	for _, m := range mountsUnder(dir, runDir) {
		left = append(left, "mount "+m)
	}
	known := map[string]bool{}
	for _, b := range before {
		known[b] = true
	}
	now, err := chains()
	if err != nil {
		left = append(left, err.Error())
	}
	for _, ch := range now {
		if !known[ch] {
			left = append(left, "iptables chain "+ch)
		}
	}
	for _, ns := range netnsList() {
		if !known["netns/"+ns] {
			left = append(left, "network namespace "+ns)
		}
	}
	if bridgeExists() {
		left = append(left, "bridge "+Bridge)
	}
	for _, d := range cgroupDirs() {
		left = append(left, "cgroup "+d)
	}
	if exists(runDir) {
		left = append(left, runDir)
	}
	for _, p := range existingHostPaths() {
		if !known["path/"+p] {
			left = append(left, p)
		}
	}
	if results, _ := filepath.Glob("/var/lib/cni/results/certpilot-cluster-*"); len(results) > 0 {
		left = append(left, fmt.Sprintf("%d CNI results in /var/lib/cni/results", len(results)))
	}
	sort.Strings(left)
	return left
}

// Snapshot is what Leftovers compares against: the iptables chains and network namespaces there
// are now. Take it before Up.
func Snapshot() ([]string, error) {
	list, err := chains()
	if err != nil {
		return nil, err
	}
	for _, ns := range netnsList() {
		list = append(list, "netns/"+ns)
	}
	for _, p := range existingHostPaths() {
		list = append(list, "path/"+p)
	}
	return list, nil
}

// removeChains flushes and deletes the iptables chains that were not there before, after
// removing the rules of the other chains that jump to them.
func removeChains(before []string) error {
	known := map[string]bool{}
	for _, b := range before {
		known[b] = true
	}
	now, err := chains()
	if err != nil {
		return err
	}
	added := map[string][]string{} // table -> chains
	for _, ch := range now {
		if !known[ch] {
			table, chain, _ := strings.Cut(ch, "/")
			added[table] = append(added[table], chain)
		}
	}
	if len(added) == 0 {
		return nil
	}
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		return err
	}
	var errs []error
	table := ""
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "*") {
			table = line[1:]
			continue
		}
		if !strings.HasPrefix(line, "-A ") {
			continue
		}
		fields := strings.Fields(line)
		isNew := func(chain string) bool {
			for _, c := range added[table] {
				if c == chain {
					return true
				}
			}
			return false
		}
		if isNew(fields[1]) {
			continue // flushed below
		}
		for i, f := range fields {
			if (f == "-j" || f == "-g") && i+1 < len(fields) && isNew(fields[i+1]) {
				// iptables-save quotes comments; the shell-free argument list must not.
				args := append([]string{"-w", "-t", table, "-D"}, unquote(fields[1:])...)
				if err := run(append([]string{"iptables"}, args...)...); err != nil {
					errs = append(errs, err)
				}
				break
			}
		}
	}
	for table, list := range added {
		for _, chain := range list {
			_ = run("iptables", "-w", "-t", table, "-F", chain)
		}
		for _, chain := range list {
			if err := run("iptables", "-w", "-t", table, "-X", chain); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// unquote joins the fields of a quoted iptables-save argument ("a b") back into one argument.
func unquote(fields []string) []string {
	var args []string
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if strings.HasPrefix(f, `"`) {
			parts := []string{f}
			for !strings.HasSuffix(parts[len(parts)-1], `"`) || parts[len(parts)-1] == `"` && len(parts) == 1 {
				i++
				if i >= len(fields) {
					break
				}
				parts = append(parts, fields[i])
			}
			f = strings.Trim(strings.Join(parts, " "), `"`)
		}
		args = append(args, f)
	}
	return args
}

// mountsUnder lists the mount points under the given directories and the pods' network
// namespaces (/run/netns/cni-*), deepest first.
func mountsUnder(dirs ...string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var found []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		point := unescapeMount(fields[4])
		for _, d := range dirs {
			if point == d || strings.HasPrefix(point, d+"/") {
				found = append(found, point)
				break
			}
		}
	}
	sort.Slice(found, func(i, j int) bool { return len(found[i]) > len(found[j]) })
	return found
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func unmountUnder(dirs ...string) error {
	var errs []error
	for range 3 {
		points := mountsUnder(dirs...)
		if len(points) == 0 {
			return nil
		}
		errs = nil
		for _, p := range points {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}

const netnsDir = "/run/netns"

func netnsList() []string {
	entries, _ := os.ReadDir(netnsDir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// removeNetns unmounts and removes the network namespaces that were not there before (the
// pods' cni-* namespaces that containerd made and no sandbox removal released).
func removeNetns(before []string) error {
	known := map[string]bool{}
	for _, n := range before {
		known[n] = true
	}
	var errs []error
	for _, n := range netnsList() {
		if known[n] || !strings.HasPrefix(n, "cni-") {
			continue
		}
		p := filepath.Join(netnsDir, n)
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// The cgroup v1 hierarchies (and the unified one) the kubelet's cgroupRoot is made in.
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var dirs []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if info, err := os.Lstat(p); err == nil && info.IsDir() {
			dirs = append(dirs, p)
		}
	}
	return dirs
}

// setUpCgroups creates the kubelet's cgroupRoot in every hierarchy (the kubelet requires it to
// exist); a new cpuset cgroup gets its parent's CPUs and memory nodes.
func setUpCgroups() error {
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, cgroupRoot)
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return err
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// cgroupDirs lists the cgroups under cgroupRoot, deepest first.
func cgroupDirs() []string {
	var dirs []string
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, cgroupRoot)
		_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

// killCgroupProcesses kills the processes in the pods' cgroups: a container whose shim was
// killed keeps running until then.
func killCgroupProcesses() error {
	for range 50 {
		var pids []int
		for _, d := range cgroupDirs() {
			data, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("processes left in the pods' cgroups")
}

func removeCgroups() error {
	var errs []error
	for _, d := range cgroupDirs() {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// removeContainerLogLinks removes the kubelet's links in /var/log/containers to pod logs under
// dir.
func removeContainerLogLinks(dir string) error {
	entries, _ := os.ReadDir("/var/log/containers")
	for _, e := range entries {
		p := filepath.Join("/var/log/containers", e.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, dir+"/") {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// CannotRun says why this machine cannot run the cluster's containers, or "" when it can: root,
// the runtime and network binaries, cgroups, and the kernel's bridge and network namespaces.
func CannotRun() string {
	if os.Geteuid() != 0 {
		return "the single-node cluster needs root (containerd, the kubelet and the pod network do)"
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "iptables-save", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			return bin + " is missing: run `make test-deps` (it installs containerd, runc, the CNI plugins and iptables)"
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if !exists(filepath.Join("/usr/lib/cni", plugin)) {
			return "/usr/lib/cni/" + plugin + " is missing: run `make test-deps` (containernetworking-plugins)"
		}
	}
	if !exists("/sys/fs/cgroup/memory") && !exists("/sys/fs/cgroup/cgroup.controllers") {
		return "no cgroup hierarchy is mounted at /sys/fs/cgroup"
	}
	probe := "certpilot-probe"
	if err := run("ip", "link", "add", probe, "type", "bridge"); err != nil {
		return "cannot create a network bridge (" + err.Error() + "): the machine must allow network administration (a VM or a privileged container)"
	}
	_ = run("ip", "link", "del", probe)
	if err := run("iptables", "-w", "-n", "-L", "FORWARD"); err != nil {
		return "iptables does not work here: " + err.Error()
	}
	return ""
}
