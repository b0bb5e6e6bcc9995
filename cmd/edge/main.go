/*
Copyright 2026 The certpilot Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// The certpilot edge: answers tls-alpn-01 and http-01 challenges from the load balancer's
// challenge Secret (watched through the API or mounted). Flags, logger and wiring; the
// behaviour lives in internal/edge.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/certpilot/certpilot/internal/edge"
)

type options struct {
	namespace          string
	challengeSecret    string
	challengeDir       string
	challengeDirResync time.Duration
	httpsAddress       string
	httpAddress        string
	healthAddress      string
	certificateFile    string
	keyFile            string
	shutdownTimeout    time.Duration
}

func main() {
	var opts options
	// --kubeconfig is registered on flag.CommandLine by controller-runtime (pkg/client/config)
	// and read by ctrl.GetConfig: the flag, else $KUBECONFIG, else in-cluster, else
	// ~/.kube/config.
	flag.StringVar(&opts.namespace, "namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace of the challenge Secret (default: $POD_NAMESPACE).")
	flag.StringVar(&opts.challengeSecret, "challenge-secret", "",
		"Name of the challenge Secret to watch through the API (the load balancer Deployment's name + \"-acme-challenges\").")
	flag.StringVar(&opts.challengeDir, "challenge-dir", "",
		"Directory holding the challenge Secret's keys as files (the Secret mounted as a volume); alternative to --challenge-secret.")
	flag.DurationVar(&opts.challengeDirResync, "challenge-dir-resync", time.Minute,
		"Re-read --challenge-dir at this interval besides watching it; 0 disables.")
	flag.StringVar(&opts.httpsAddress, "https-bind-address", ":443", "Address of the TLS listener (tls-alpn-01 and ordinary TLS).")
	flag.StringVar(&opts.httpAddress, "http-bind-address", ":80", "Address of the HTTP listener (http-01).")
	flag.StringVar(&opts.healthAddress, "health-bind-address", ":8082", "Address of the /healthz and /readyz endpoints; empty disables them.")
	flag.StringVar(&opts.certificateFile, "certificate", "",
		"PEM certificate chain served to ordinary (non-challenge) handshakes whatever their SNI; needs --key.")
	flag.StringVar(&opts.keyFile, "key", "", "PEM private key of --certificate.")
	flag.DurationVar(&opts.shutdownTimeout, "shutdown-timeout", 20*time.Second,
		"How long open connections may finish after SIGTERM (keep it under the pod's termination grace period).")
	zapOptions := zap.Options{}
	zapOptions.BindFlags(flag.CommandLine)
	flag.Parse()

	logger := zap.New(zap.UseFlagOptions(&zapOptions))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger.WithName("client-go"))
	log := logger.WithName("edge")

	if err := run(ctrl.SetupSignalHandler(), opts, log); err != nil {
		log.Error(err, "Edge failed")
		os.Exit(1)
	}
	log.Info("Stopped")
}

// run wires the edge and serves until ctx is done or a part fails.
func run(ctx context.Context, opts options, log logr.Logger) error {
	if (opts.challengeSecret == "") == (opts.challengeDir == "") {
		return errors.New("set exactly one of --challenge-secret and --challenge-dir")
	}
	if (opts.certificateFile == "") != (opts.keyFile == "") {
		return errors.New("--certificate and --key go together")
	}

	var certificates edge.CertificateSource
	if opts.certificateFile != "" {
		certificate, err := tls.LoadX509KeyPair(opts.certificateFile, opts.keyFile)
		if err != nil {
			return fmt.Errorf("loading --certificate and --key: %w", err)
		}
		if certificates, err = edge.NewStaticCertificates(nil, &certificate); err != nil {
			return err
		}
	}

	store := edge.NewChallengeStore()
	source, err := newSource(opts, store, log)
	if err != nil {
		return err
	}

	listeners, err := edge.Listen(opts.httpsAddress, opts.httpAddress, opts.healthAddress)
	if err != nil {
		return err
	}
	server := edge.NewServer(store, certificates, log)

	group, groupCtx := errgroup.WithContext(ctx)
	group.Go(func() error {
		err := source.Run(groupCtx)
		if err == nil && groupCtx.Err() == nil {
			err = errors.New("challenge source stopped")
		}
		return err
	})
	group.Go(func() error { return server.Serve(listeners) })
	group.Go(func() error {
		<-groupCtx.Done()
		log.Info("Shutting down", "timeout", opts.shutdownTimeout.String())
		shutdownCtx, cancel := context.WithTimeout(context.Background(), opts.shutdownTimeout)
		defer cancel()
		return server.Shutdown(shutdownCtx)
	})
	return group.Wait()
}

// newSource returns the source named by the flags.
func newSource(opts options, store *edge.ChallengeStore, log logr.Logger) (edge.Source, error) {
	if opts.challengeDir != "" {
		return &edge.DirSource{
			Dir: opts.challengeDir, Store: store, Log: log.WithName("directory"), ResyncInterval: opts.challengeDirResync,
		}, nil
	}
	if opts.namespace == "" {
		return nil, errors.New("--challenge-secret needs --namespace (or $POD_NAMESPACE)")
	}
	config, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the Kubernetes client configuration: %w", err)
	}
	config.UserAgent = "certpilot-edge"
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	return &edge.SecretSource{
		Client: client, Namespace: opts.namespace, Name: opts.challengeSecret, Store: store, Log: log.WithName("secret"),
	}, nil
}
