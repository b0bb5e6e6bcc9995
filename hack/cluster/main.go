// Command cluster runs the single-node cluster of internal/testcluster for a person to try
// certpilot as it runs in production (docs/cluster.md):
//
//	cluster up --dir bin/cluster    build the image, start the node with the image in its
//	                                registry, `helm install` certpilot (two managers and the
//	                                edge), start BIND and Pebble where pods reach them and create
//	                                the ClusterIssuers "pebble" and "pebble-dns01"; write
//	                                <dir>/kubeconfig and <dir>/env; run until SIGTERM or SIGINT,
//	                                then tear everything down
//	cluster down --dir bin/cluster  remove what a cluster that did not stop cleanly left behind
//
// `make cluster-up` runs `up` in the background and `make cluster-down` stops it.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/certpilot/certpilot/internal/testcluster"
	"github.com/certpilot/certpilot/internal/testenv"
)

const (
	namespace = "certpilot-system"
	release   = "certpilot"
)

func main() {
	ctrllog.SetLogger(logr.Discard())
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cluster up|down --dir DIR")
		os.Exit(2)
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := flags.String("dir", "bin/cluster", "the cluster's state directory")
	_ = flags.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "up":
		err = up(*dir)
	case "down":
		err = testcluster.CleanupAndCheck(*dir)
	default:
		err = fmt.Errorf("unknown command %q: want up or down", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func up(dir string) (err error) {
	started := time.Now()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	fmt.Println("[cluster] building the image (hack/build-image.sh)")
	image, err := testcluster.BuildImage(ctx, "certpilot")
	if err != nil {
		return err
	}
	cluster, err := testcluster.Up(ctx, testcluster.Options{Dir: dir, Images: []string{image}, Log: os.Stdout})
	if err != nil {
		return err
	}
	var pebble *testenv.Pebble
	defer func() {
		if pebble != nil {
			pebble.Stop()
		}
		if downErr := cluster.Down(); downErr != nil && err == nil {
			err = downErr
		}
		fmt.Println("[cluster] down")
	}()

	values := testcluster.ImageValues()
	values["edge"] = map[string]any{"enabled": true, "replicas": 1, "service": map[string]any{"type": "ClusterIP"}}
	fmt.Printf("[cluster] helm install %s charts/certpilot --namespace %s (with the edge)\n", release, namespace)
	if err := cluster.HelmInstall(ctx, release, namespace, values); err != nil {
		return err
	}
	k, err := cluster.Client()
	if err != nil {
		return err
	}
	edgeIP, err := testcluster.ServiceIP(ctx, k, namespace, release+"-edge")
	if err != nil {
		return err
	}
	bind, err := cluster.StartBIND(ctx, edgeIP)
	if err != nil {
		return err
	}
	if pebble, err = cluster.StartPebbleWithDNS(ctx, bind.Address); err != nil {
		return err
	}
	tsig := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pebble-dns01-tsig", Namespace: namespace},
		Data:       map[string][]byte{"secret": []byte(bind.TSIGSecret)},
	}
	for _, obj := range []client.Object{
		testcluster.PebbleClusterIssuer("pebble", pebble, namespace, release+"-edge", net.JoinHostPort(edgeIP, "443")),
		tsig,
		testcluster.BINDClusterIssuer("pebble-dns01", pebble, bind, tsig.Name),
	} {
		if err := k.Create(ctx, obj); err != nil {
			return err
		}
	}

	bin, _ := testenv.BinDir()
	env := fmt.Sprintf("export KUBECONFIG=%s\nexport PATH=%s:%s:$PATH\n", cluster.Kubeconfig,
		filepath.Join(bin, "k8s"), filepath.Join(bin, "helm"))
	if err := os.WriteFile(filepath.Join(cluster.Dir, "env"), []byte(env), 0o644); err != nil {
		return err
	}
	fmt.Printf("[cluster] up in %s: registry http://%s (certpilot from %s), Pebble at %s, BIND at %s (every name resolves to the edge Service %s), ClusterIssuers \"pebble\" (tls-alpn-01) and \"pebble-dns01\" (dns-01, RFC 2136)\n",
		time.Since(started).Round(100*time.Millisecond), testcluster.Registry, testcluster.CertpilotImage,
		pebble.DirectoryURL(), bind.Address, edgeIP)
	<-stop
	return nil
}
