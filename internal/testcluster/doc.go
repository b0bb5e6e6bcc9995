// Package testcluster runs a single-node Kubernetes cluster on this machine from the binaries
// under bin/ (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy;
// hack/build-test-binaries.sh) and Debian's containerd, runc and CNI plugins
// (hack/install-test-deps.sh), so that certpilot runs in pods as users run it: `make
// cluster-up` (hack/cluster) and the real-cluster tests (test/cluster) use it. docs/cluster.md
// describes the node.
//
// The pod network stays inside the machine: pods live on a bridge the package creates, with
// routes only to the pod and service ranges, no default route, no masquerade and an empty
// resolv.conf. The bridge forwards between pods (a Service between two pods needs it) and a rule
// drops anything forwarded from the bridge to another interface; the machine's ip_forward stays
// as it is. Every component listens on loopback or on the bridge's address.
//
// Down stops everything in the order that lets each part clean up (pods, kubelet, kube-proxy,
// apiserver, etcd, containerd) and then removes what a crash could leave: processes, mounts,
// network namespaces, iptables chains, cgroups and the bridge. Leftovers reports what is still
// there, so a test can check that a teardown left the machine as it found it.
package testcluster
