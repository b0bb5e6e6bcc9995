// Command pause is the sandbox ("pause") container of the single-node cluster (test/cluster):
// it holds the pod's namespaces and waits for SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
