package testcluster

import (
	"fmt"
	"os"
	"path/filepath"
)

// containerdConfig is containerd's configuration: its own socket, root and state, runc's state
// under runDir, the CRI plugin with the cluster's sandbox image and CNI directory, and the
// registries' hosts.toml files under dir/certs.d (registryHosts).
//
// restrict_oom_score_adj: root on these machines may lower no process's oom_score_adj (no
// CAP_SYS_RESOURCE), and without it every sandbox fails with "can't get final child's PID from
// pipe: EOF".
func containerdConfig(dir string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[9]q
`, filepath.Join(dir, "containerd"), filepath.Join(runDir, "containerd"), containerdSocket,
		containerdSocket+".ttrpc", filepath.Join(dir, "containerd-opt"), PauseImage,
		filepath.Join(runDir, "runc"), filepath.Join(dir, "cni"), filepath.Join(dir, "certs.d"))
}

// registryHosts is containerd's hosts.toml for Registry, at dir/certs.d/<Registry>/hosts.toml:
// the registry speaks plain HTTP. containerd 1.6 refuses a hosts.toml without a host table
// ("invalid `host` tree") and then tries HTTPS.
func registryHosts() string {
	return fmt.Sprintf(`server = "http://%[1]s"

[host."http://%[1]s"]
  capabilities = ["pull", "resolve"]
`, Registry)
}

// containerdSocket is containerd's gRPC socket.
const containerdSocket = runDir + "/containerd.sock"

// PauseImage is the sandbox image: a static binary that waits for SIGTERM (hack/image/pause).
const PauseImage = "certpilot.local/pause:1"

// cniConfig puts pods on the bridge with addresses from PodCIDR and one route, to the Service
// range through the node; no default route and no masquerade.
func cniConfig(dir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "certpilot-cluster",
  "plugins": [{
    "type": "bridge",
    "bridge": %[1]q,
    "isGateway": true,
    "isDefaultGateway": false,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": %[2]q,
      "ranges": [[{"subnet": %[3]q, "gateway": %[4]q}]],
      "routes": [{"dst": %[5]q}]
    }
  }]
}
`, Bridge, filepath.Join(dir, "cni-ipam"), PodCIDR, BridgeIP, ServiceCIDR)
}

// kubeletConfig is the kubelet's configuration for this machine kind: cgroup v1 with the
// cgroupfs driver (failCgroupV1: false), swap tolerated, every pod cgroup under cgroupRoot,
// pod logs under dir, an empty resolv.conf, eviction thresholds low enough for a shared disk.
// The syncFrequency is the kubelet's default (1 minute): mounted Secrets change in pods at that
// pace, as on most clusters.
func kubeletConfig(dir, caFile, resolvConf string, port, healthzPort int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[3]d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[4]q}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: /%[5]s
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[6]s
resolvConf: %[7]q
podLogsDir: %[8]q
clusterDomain: cluster.local
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
`, BridgeIP, port, healthzPort, caFile, cgroupRoot, containerdSocket, resolvConf, filepath.Join(dir, "pod-logs"))
}

// kubeProxyConfig is kube-proxy in iptables mode. It changes no sysctl (conntrack limits and
// timeouts left as they are, no route_localnet for localhost NodePorts) and serves NodePorts on
// the bridge address only.
func kubeProxyConfig(kubeconfig string, healthzPort, metricsPort int) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %[1]q
mode: iptables
hostnameOverride: %[2]s
clusterCIDR: %[3]s
healthzBindAddress: 127.0.0.1:%[4]d
metricsBindAddress: 127.0.0.1:%[5]d
nodePortAddresses: [%[6]s/32]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
`, kubeconfig, NodeName, PodCIDR, healthzPort, metricsPort, BridgeIP)
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o600)
}
