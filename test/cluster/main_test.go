// Package cluster tests certpilot on a real node (internal/testcluster): the image `make image`
// builds, installed by `helm install` from charts/certpilot, its manager and edge running in pods
// that the kubelet starts through containerd, Pebble validating against the edge pod through its
// Service. The package starts one cluster for all its tests and checks, after tearing it down,
// that nothing is left on the machine. Skipped under -short.
package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/testcluster"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("test/cluster: needs a real node; skipped under -short")
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	if why := testcluster.CannotRun(); why != "" {
		fmt.Fprintln(os.Stderr, "test/cluster: this machine cannot run the single-node cluster:", why)
		return 1
	}
	before, err := testcluster.Snapshot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/cluster:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "certpilot-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/cluster:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	started := time.Now()
	image, err := testcluster.BuildImage(ctx, "certpilot")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/cluster:", err)
		return 1
	}
	built := time.Now()
	cluster, err = testcluster.Up(ctx, testcluster.Options{Dir: dir, Images: []string{image}, Log: os.Stdout})
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/cluster:", err)
		return 1
	}
	fmt.Printf("FIGURE image built in %s, node Ready in %s\n", built.Sub(started).Round(100*time.Millisecond), time.Since(built).Round(100*time.Millisecond))

	defer func() {
		if code != 0 {
			fmt.Printf("test/cluster: component logs are in %s/logs\n", dir)
			printLogs(dir)
		}
		downStarted := time.Now()
		if err := cluster.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "test/cluster: tearing down:", err)
			code = 1
		}
		if left := testcluster.Leftovers(dir, before); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "test/cluster: the teardown left %d things behind:\n", len(left))
			for _, l := range left {
				fmt.Fprintln(os.Stderr, "  "+l)
			}
			code = 1
		}
		fmt.Printf("FIGURE teardown in %s, nothing left\n", time.Since(downStarted).Round(100*time.Millisecond))
	}()
	return m.Run()
}

// printLogs prints the end of each component's log, for a failed run.
func printLogs(dir string) {
	entries, _ := os.ReadDir(dir + "/logs")
	for _, e := range entries {
		data, _ := os.ReadFile(dir + "/logs/" + e.Name())
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Printf("--- %s (end)\n%s\n", e.Name(), data)
	}
}
