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
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/kube"
)

type options struct {
	namespace          string
	loadBalancer       string
	challengeSecret    string
	challengeDir       string
	challengeDirResync time.Duration
	httpsAddress       string
	httpAddress        string
	healthAddress      string
	certificateFile    string
	keyFile            string
	// Ordinary certificates by SNI.
	certificateNamespaces stringList
	hostNamespaces        stringList
	certificateDirs       stringList
	certificateDirResync  time.Duration
	shutdownTimeout       time.Duration
	// Traffic.
	mode         string
	routesFile   string
	routesResync time.Duration
	upstream     string
	proxyProto   bool
	httpRedirect bool
	redirectPort int
	profiling    bool
	// Access log and shutdown.
	accessLog       bool
	accessLogSample float64
	shutdownDelay   time.Duration
}

func main() {
	var opts options
	// --kubeconfig is registered on flag.CommandLine by controller-runtime (pkg/client/config)
	// and read by ctrl.GetConfig: the flag, else $KUBECONFIG, else in-cluster, else
	// ~/.kube/config.
	flag.StringVar(&opts.namespace, "namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace of the challenge Secret (default: $POD_NAMESPACE).")
	flag.StringVar(&opts.loadBalancer, "load-balancer", "",
		"Name of the load balancer Deployment the edge serves challenges for: its challenge shard Secrets (and the single challenge Secret of earlier versions) are watched through the API.")
	flag.StringVar(&opts.challengeSecret, "challenge-secret", "",
		"Name of one challenge Secret to watch through the API (the single Secret of earlier versions: the Deployment's name + \"-acme-challenges\"); prefer --load-balancer.")
	flag.StringVar(&opts.challengeDir, "challenge-dir", "",
		"Directory holding the challenge Secret's keys as files (the Secret mounted as a volume); alternative to --challenge-secret.")
	flag.DurationVar(&opts.challengeDirResync, "challenge-dir-resync", time.Minute,
		"Re-read --challenge-dir at this interval besides watching it; 0 disables.")
	flag.StringVar(&opts.httpsAddress, "https-bind-address", ":443", "Address of the TLS listener (tls-alpn-01 and ordinary TLS).")
	flag.StringVar(&opts.httpAddress, "http-bind-address", ":80", "Address of the HTTP listener (http-01, redirects to HTTPS).")
	flag.StringVar(&opts.healthAddress, "health-bind-address", ":8082", "Address of /healthz, /readyz and /metrics (Prometheus); empty disables them.")
	flag.StringVar(&opts.certificateFile, "certificate", "",
		"PEM certificate chain of the default certificate, served to ordinary handshakes whose SNI no other certificate covers; needs --key.")
	flag.Var(&opts.certificateNamespaces, "certificate-namespaces",
		"Serve the certificates certpilot issued in these namespaces: certificate Secrets (label "+edge.CertificateSecretSelector+") controlled by a Certificate that lists the name and records the serial as issued, watched through the API with the Certificates (comma-separated, repeatable).")
	flag.Var(&opts.hostNamespaces, "certificate-host-namespaces",
		"With --certificate-namespaces, serve each name only from the namespaces mapped to it: PATTERN=NAMESPACE entries, PATTERN a DNS name or *.DOMAIN (every name under DOMAIN); names no entry covers are served from no namespace (comma-separated, repeatable).")
	flag.Var(&opts.certificateDirs, "certificate-dir",
		"Serve the certificate of this directory: a mounted certificate Secret (tls.crt and tls.key, or bundle.pem) or a directory of *.pem bundles (repeatable).")
	flag.DurationVar(&opts.certificateDirResync, "certificate-dir-resync", time.Minute,
		"Re-read --certificate-dir at this interval besides watching it; 0 disables.")
	flag.StringVar(&opts.keyFile, "key", "", "PEM private key of --certificate.")
	flag.DurationVar(&opts.shutdownTimeout, "shutdown-timeout", 20*time.Second,
		"How long open connections may finish after SIGTERM (keep it under the pod's termination grace period).")
	flag.StringVar(&opts.mode, "mode", string(edge.ModeTerminate),
		"How ordinary TLS connections are carried: terminate (TLS ends here; HTTP proxied to upstreams) or passthrough (spliced by SNI to upstream TLS endpoints).")
	flag.StringVar(&opts.routesFile, "routes", "",
		"Route file (YAML or JSON; see docs/edge.md), reloaded when it changes.")
	flag.DurationVar(&opts.routesResync, "routes-resync", time.Minute, "Re-read --routes at this interval besides watching it; 0 disables.")
	flag.StringVar(&opts.upstream, "upstream", "",
		"Route every host to this upstream (terminate: an http:// or https:// URL; passthrough: host:port); instead of --routes.")
	flag.BoolVar(&opts.proxyProto, "upstream-proxy-protocol", false, "With --upstream in passthrough mode, send a PROXY protocol v2 header first.")
	flag.BoolVar(&opts.httpRedirect, "http-redirect", true,
		"Redirect plain HTTP requests other than http-01 challenges to HTTPS (otherwise 404).")
	flag.IntVar(&opts.redirectPort, "https-redirect-port", 443, "Port of the HTTPS URLs the HTTP listener redirects to.")
	flag.BoolVar(&opts.profiling, "profiling", false, "Serve Go's pprof handlers at /debug/pprof/ on the health listener.")
	flag.BoolVar(&opts.accessLog, "access-log", false,
		"Write an access log line (JSON) per request, or per connection in passthrough mode, to standard output. Never holds header values, query strings or http-01 tokens.")
	flag.Float64Var(&opts.accessLogSample, "access-log-sample", 1,
		"With --access-log, the fraction of lines written (0 < f <= 1); lines with a 5xx status are always written.")
	flag.DurationVar(&opts.shutdownDelay, "shutdown-delay", 0,
		"On SIGTERM, report not ready and keep serving this long before draining (for endpoints to drop the pod); counts against --shutdown-timeout.")
	zapOptions := zap.Options{}
	zapOptions.BindFlags(flag.CommandLine)
	flag.Parse()

	// Capped: from V(8) on, client-go would log response bodies, the Secrets the edge reads.
	logger := kube.CapVerbosity(zap.New(zap.UseFlagOptions(&zapOptions)), kube.MaxVerbosity)
	ctrl.SetLogger(logger)
	klog.SetLogger(logger.WithName("client-go"))
	log := logger.WithName("edge")
	edge.TuneGC(log)

	if err := run(ctrl.SetupSignalHandler(), opts, log); err != nil {
		log.Error(err, "Edge failed")
		os.Exit(1)
	}
	log.Info("Stopped")
}

// run wires the edge and serves until ctx is done or a part fails.
func run(ctx context.Context, opts options, log logr.Logger) error {
	if set := btoi(opts.loadBalancer != "") + btoi(opts.challengeSecret != "") + btoi(opts.challengeDir != ""); set != 1 {
		return errors.New("set exactly one of --load-balancer, --challenge-secret and --challenge-dir")
	}
	if (opts.certificateFile == "") != (opts.keyFile == "") {
		return errors.New("--certificate and --key go together")
	}
	if len(opts.hostNamespaces) > 0 && len(opts.certificateNamespaces) == 0 {
		return errors.New("--certificate-host-namespaces needs --certificate-namespaces")
	}

	metrics := edge.NewMetrics()
	certificates, certificateSources, err := newCertificates(opts, metrics, log)
	if err != nil {
		return err
	}

	store := edge.NewChallengeStore()
	source, err := newSource(opts, store, log)
	if err != nil {
		return err
	}

	var accessLog *edge.AccessLog
	if opts.accessLog {
		if opts.accessLogSample <= 0 || opts.accessLogSample > 1 {
			return errors.New("--access-log-sample must be more than 0 and at most 1")
		}
		accessLog = edge.NewAccessLog(os.Stdout, opts.accessLogSample)
	}
	if opts.shutdownDelay < 0 || opts.shutdownDelay >= opts.shutdownTimeout {
		return errors.New("--shutdown-delay must be at least 0 and less than --shutdown-timeout")
	}

	mode := edge.Mode(opts.mode)
	if mode != edge.ModeTerminate && mode != edge.ModePassthrough {
		return fmt.Errorf("--mode must be %s or %s", edge.ModeTerminate, edge.ModePassthrough)
	}
	routes := edge.NewRoutes(mode)
	var routeSource edge.Source
	switch {
	case opts.routesFile != "" && opts.upstream != "":
		return errors.New("set at most one of --routes and --upstream")
	case opts.upstream != "":
		config, err := edge.ParseRouteConfig(fmt.Appendf(nil, "routes: [{host: '*', upstream: %q, proxyProtocol: %t}]",
			opts.upstream, opts.proxyProto), mode)
		if err != nil {
			return fmt.Errorf("--upstream: %w", err)
		}
		routes.Set(config)
	case opts.routesFile != "":
		routes.Expect()
		routeSource = &edge.RouteFileSource{Path: opts.routesFile, Routes: routes, Log: log.WithName("routes"), ResyncInterval: opts.routesResync}
	}

	listeners, err := edge.Listen(opts.httpsAddress, opts.httpAddress, opts.healthAddress)
	if err != nil {
		return err
	}
	server := edge.NewServer(edge.Options{
		Mode: mode, Challenges: store, Certificates: certificates, Routes: routes,
		RedirectHTTP: opts.httpRedirect, HTTPSPort: opts.redirectPort, Profiling: opts.profiling,
		AccessLog: accessLog, ShutdownDelay: opts.shutdownDelay, Metrics: metrics, Log: log,
	})

	group, groupCtx := errgroup.WithContext(ctx)
	group.Go(func() error {
		err := source.Run(groupCtx)
		if err == nil && groupCtx.Err() == nil {
			err = errors.New("challenge source stopped")
		}
		return err
	})
	if routeSource != nil {
		certificateSources = append(certificateSources, routeSource)
	}
	for _, certificateSource := range certificateSources {
		group.Go(func() error {
			err := certificateSource.Run(groupCtx)
			if err == nil && groupCtx.Err() == nil {
				err = errors.New("certificate or route source stopped")
			}
			return err
		})
	}
	group.Go(func() error { return server.Serve(listeners) })
	group.Go(func() error {
		<-groupCtx.Done()
		log.Info("Shutting down", "timeout", opts.shutdownTimeout.String())
		shutdownCtx, cancel := context.WithTimeout(context.Background(), opts.shutdownTimeout)
		defer cancel()
		err := server.Shutdown(shutdownCtx)
		if errors.Is(err, context.DeadlineExceeded) {
			// Draining ends at the deadline by design: what was still open has been closed.
			log.Info("Shutdown deadline reached; closed the connections still open", "timeout", opts.shutdownTimeout.String())
			return nil
		}
		return err
	})
	return group.Wait()
}

// newCertificates returns the store of ordinary certificates, loaded with the default
// certificate and $SSL_CERTS, and the sources that keep it up to date.
func newCertificates(opts options, metrics *edge.Metrics, log logr.Logger) (*edge.CertificateStore, []edge.Source, error) {
	store := edge.NewCertificateStore()
	if opts.certificateFile != "" {
		certificate, err := tls.LoadX509KeyPair(opts.certificateFile, opts.keyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("loading --certificate and --key: %w", err)
		}
		if err := store.SetDefault(&certificate); err != nil {
			return nil, nil, err
		}
	}
	if bundles := os.Getenv("SSL_CERTS"); bundles != "" {
		certificates, err := edge.ParseBundles([]byte(bundles))
		if err != nil {
			// A bad bundle is a configuration error: refuse to start rather than serve without it.
			return nil, nil, fmt.Errorf("loading $SSL_CERTS: %w", err)
		}
		store.Replace(edge.CertificateSetEnvironment, certificates)
		log.Info("Loaded $SSL_CERTS", "certificates", len(certificates))
	}
	var sources []edge.Source
	if len(opts.certificateDirs) > 0 {
		sources = append(sources, edge.NewCertificateDirSource(opts.certificateDirs, opts.certificateDirResync, store,
			log.WithName("certificate-dir")))
	}
	if len(opts.certificateNamespaces) > 0 {
		var hosts *edge.HostNamespaces
		if len(opts.hostNamespaces) > 0 {
			var err error
			if hosts, err = edge.ParseHostNamespaces(opts.hostNamespaces); err != nil {
				return nil, nil, fmt.Errorf("--certificate-host-namespaces: %w", err)
			}
		}
		config, err := newClientConfig()
		if err != nil {
			return nil, nil, err
		}
		source, err := edge.NewCertificateSecretSource(config, opts.certificateNamespaces, store, metrics,
			log.WithName("certificate-secrets"))
		if err != nil {
			return nil, nil, err
		}
		source.HostNamespaces = hosts
		sources = append(sources, source)
	}
	return store, sources, nil
}

// newClientConfig returns the Kubernetes client configuration from --kubeconfig, $KUBECONFIG
// or the pod's account.
func newClientConfig() (*rest.Config, error) {
	config, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the Kubernetes client configuration: %w", err)
	}
	config.UserAgent = "certpilot-edge"
	return config, nil
}

// newClient returns a Kubernetes client from newClientConfig.
func newClient() (kubernetes.Interface, error) {
	config, err := newClientConfig()
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(kube.Protobuf(config))
	if err != nil {
		return nil, fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	return client, nil
}

// stringList is a repeatable flag whose values may also be comma-separated.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(value string) error {
	for item := range strings.SplitSeq(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

// newSource returns the source named by the flags.
func newSource(opts options, store *edge.ChallengeStore, log logr.Logger) (edge.Source, error) {
	if opts.challengeDir != "" {
		return &edge.DirSource{
			Dir: opts.challengeDir, Store: store, Log: log.WithName("directory"), ResyncInterval: opts.challengeDirResync,
		}, nil
	}
	if opts.namespace == "" {
		return nil, errors.New("--load-balancer and --challenge-secret need --namespace (or $POD_NAMESPACE)")
	}
	client, err := newClient()
	if err != nil {
		return nil, err
	}
	names := []string{opts.challengeSecret}
	if opts.loadBalancer != "" {
		names = names[:0]
		for i := range v1alpha1.ChallengeShards {
			names = append(names, v1alpha1.ChallengeShardName(opts.loadBalancer, i))
		}
		names = append(names, v1alpha1.ChallengeSecretName(opts.loadBalancer))
	}
	return &edge.SecretSource{
		Client: client, Namespace: opts.namespace, Names: names, Store: store, Log: log.WithName("secret"),
	}, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
