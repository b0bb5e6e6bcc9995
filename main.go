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

// The certpilot manager: flags, logger, manager and reconcilers. Decisions live elsewhere.
package main

import (
	"flag"
	"maps"
	"os"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/controllers"
	"github.com/certpilot/certpilot/controllers/source"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/budget"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/memory"
	"github.com/certpilot/certpilot/internal/metricsauth"
	"github.com/certpilot/certpilot/internal/netguard"
	"github.com/certpilot/certpilot/internal/solver"
)

func main() {
	var (
		metricsAddr        string
		metricsSecure      bool
		metricsCertDir     string
		metricsAudiences   string
		probeAddr          string
		pprofAddr          string
		gcPercent          int
		memoryLimitRatio   float64
		leaderElect        bool
		leaderElectionNS   string
		clusterResourceNS  string
		issuerWorkers      int
		certificateWorkers int
		issuerWorkersMax   int
		apiQPS             float64
		apiBurst           int
		selfCheckTimeout   time.Duration
		watchNamespaces    string
		gatewaySource      bool
		ingressSource      bool
		allowPrivateDials  string
		namespaceOrders    int
		challengeHold      time.Duration
		injectKinds        string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", false,
		"Serve /metrics over HTTPS, to clients the apiserver authenticates (TokenReview) and authorises for GET /metrics (SubjectAccessReview). The Helm chart turns it on.")
	flag.StringVar(&metricsCertDir, "metrics-cert-dir", "",
		"Directory with tls.crt and tls.key for --metrics-secure (default: a self-signed certificate made at start).")
	flag.StringVar(&metricsAudiences, "metrics-token-audiences", "",
		"Comma-separated audiences of the bearer tokens --metrics-secure accepts (sent in each TokenReview; the apiserver must say the token is for one of them). "+
			"Default: the apiserver's own audiences, which a Pod's ServiceAccount token has; a token projected for another audience is refused.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "",
		"Address of Go's net/http/pprof endpoints (/debug/pprof/), for profiling memory and CPU (heap samples every 16 KiB allocated when set); empty (the default) disables them.")
	flag.IntVar(&gcPercent, "gc-percent", 25,
		"Garbage the Go collector lets accumulate between collections, in percent of the live heap (GOGC; the environment variable wins). "+
			"The live heap is mostly the informer caches, which do not turn over: Go's default of 100 lets garbage grow as large as all cached objects.")
	flag.Float64Var(&memoryLimitRatio, "memory-limit-ratio", 0.9,
		"Soft memory limit of the Go runtime (GOMEMLIMIT; the environment variable wins), as a fraction of the container's memory limit (cgroup); 0 disables it. "+
			"Without a container limit there is none.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles at a time.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	flag.StringVar(&clusterResourceNS, "cluster-resource-namespace", envOr("POD_NAMESPACE", "certpilot-system"),
		"Namespace of the Secrets that ClusterIssuers name (account keys, EAB and TSIG keys).")
	flag.StringVar(&watchNamespaces, "watch-namespaces", "",
		"Comma-separated namespaces whose Certificates, Issuers, Secrets and workloads the manager watches (default: all). The cluster resource namespace is always included.")
	flag.IntVar(&issuerWorkers, "issuer-workers", 2, "Reconcile workers of the Issuer and of the ClusterIssuer controller.")
	flag.IntVar(&certificateWorkers, "certificate-workers", 64,
		"Reconcile workers of the Certificate controller. ACME waits are requeues, so a worker carries the round trips of one issuance's steps and its in-line looks at the order (docs/design.md); the default carries 1,000 concurrent issuances.")
	flag.IntVar(&issuerWorkersMax, "issuer-workers-max", 0,
		"At most this many Certificate workers talk to one issuer's CA at once, so that a slow CA cannot hold them all (0: no bound). A bound below --certificate-workers slows a burst of issuances from one issuer: its Certificates wait their turn.")
	flag.Float64Var(&apiQPS, "kube-api-qps", 200, "Requests per second the manager may send to the apiserver (client-go's default, 20, throttles bursts of issuances).")
	flag.IntVar(&apiBurst, "kube-api-burst", 400, "Burst of requests above --kube-api-qps.")
	flag.DurationVar(&selfCheckTimeout, "self-check-timeout", 10*time.Second,
		"Deadline of the self-checks of one reconcile (all names of an order are checked in parallel within it).")
	flag.BoolVar(&gatewaySource, "gateway-source", true,
		"Generate Certificates from Gateways (gateway.networking.k8s.io/v1) annotated with an issuer; off until the Gateway API CRDs are installed.")
	flag.BoolVar(&ingressSource, "ingress-source", true, "Generate Certificates from Ingresses (networking.k8s.io/v1) annotated with an issuer.")
	flag.StringVar(&allowPrivateDials, "allow-private-dials", "",
		"Comma-separated CIDR prefixes of loopback, private and cluster addresses that the ACME clients of namespaced Issuers may connect to (for example an in-cluster step-ca). "+
			"Default: none, only public addresses. Link-local and metadata addresses are never dialled for them; ClusterIssuers are not restricted.")
	flag.IntVar(&namespaceOrders, "namespace-order-budget", budget.DefaultOrdersPerHour,
		"New ACME orders per hour that the Certificates of one namespace may create with one ACME account (a token bucket of that many orders, refilled over the hour); "+
			"beyond it a Certificate is Stalled/Throttled until its next order is allowed. 0: no budget. Shared accounts have limits of their own (Let's Encrypt: 300 new orders per 3 hours).")
	flag.DurationVar(&challengeHold, "challenge-hold", solver.MaxChallengeHold,
		"How long one Certificate may hold a name's challenge response in a shared load balancer while another Certificate waits for that name (ChallengeNameBusy); then the name goes to the waiting one.")
	flag.StringVar(&injectKinds, "inject-kinds", "Deployment,StatefulSet,DaemonSet",
		"Comma-separated workload kinds a Certificate's spec.inject may write into (Deployment, StatefulSet, DaemonSet); empty: none. "+
			"The manager watches and reads only these kinds for injection (the Helm chart grants RBAC on StatefulSets and DaemonSets only when listed in injection.kinds); "+
			"load balancer Deployments are read and patched whatever it says.")
	zapOptions := zap.Options{}
	zapOptions.BindFlags(flag.CommandLine)
	flag.Parse()

	// Capped: from V(8) on, client-go would log request and response bodies, Secrets included.
	ctrl.SetLogger(kube.CapVerbosity(zap.New(zap.UseFlagOptions(&zapOptions)), kube.MaxVerbosity))
	if pprofAddr != "" {
		// The default sample, one per 512 KiB allocated, is too coarse for a heap of tens of MiB.
		goruntime.MemProfileRate = 16 << 10
	}
	log := ctrl.Log.WithName("setup")
	gc := memory.Configure(gcPercent, memoryLimitRatio, "/sys/fs/cgroup")
	log.Info("Set the garbage collector's targets", "gcPercent", gc.GCPercent, "gcPercentSource", gc.GCPercentSource,
		"memoryLimit", gc.Limit, "memoryLimitSource", gc.LimitSource)

	scheme := runtime.NewScheme()
	must(clientgoscheme.AddToScheme(scheme))
	must(certpilotv1alpha1.AddToScheme(scheme))
	must(gatewayv1.Install(scheme))

	cacheOptions := cache.Options{
		// Nothing reads managedFields from the cache (injection reads workloads from the API):
		// dropping them keeps cached objects small.
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			// certpilot's Secrets but the load balancers' challenge shards, whole only when a
			// Certificate controls them.
			&corev1.Secret{}: kube.SecretCache(),
			// Whole, with the strings that repeat across Certificates shared.
			&certpilotv1alpha1.Certificate{}: kube.CertificateCache(),
		},
	}
	if watchNamespaces != "" {
		// Confined to some namespaces (the Helm chart's watchNamespaces grants Roles there).
		cacheOptions.DefaultNamespaces = map[string]cache.Config{clusterResourceNS: {}}
		for _, namespace := range strings.Split(watchNamespaces, ",") {
			if namespace = strings.TrimSpace(namespace); namespace != "" {
				cacheOptions.DefaultNamespaces[namespace] = cache.Config{}
			}
		}
	}

	restConfig := ctrl.GetConfigOrDie()
	restConfig.QPS, restConfig.Burst = float32(apiQPS), apiBurst
	kube.TimeRequests(restConfig)
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOptions(metricsAddr, metricsSecure, metricsCertDir, splitList(metricsAudiences)),
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "certpilot.dev",
		LeaderElectionNamespace: leaderElectionNS,
		// The cache holds only the Secrets certpilot owns, never every Secret of the cluster,
		// so memory follows the number of certificates: a Secret merely labelled as certpilot's
		// is cached as metadata. Other Secrets (account, EAB, TSIG keys) and load balancer
		// Deployments are read straight from the API when needed.
		Cache: cacheOptions,
	})
	if err != nil {
		log.Error(err, "Unable to create the manager")
		os.Exit(1)
	}
	ctx := ctrl.SetupSignalHandler()
	privateDials, err := netguard.ParseCIDRs(allowPrivateDials)
	if err != nil {
		log.Error(err, "Invalid --allow-private-dials")
		os.Exit(1)
	}
	accounts := &controllers.Accounts{
		Reader:                   mgr.GetAPIReader(),
		ClusterResourceNamespace: clusterResourceNS,
		UserAgent:                "certpilot",
		NamespacedDials:          &netguard.Policy{Allow: privateDials},
	}
	issuerOptions := controller.Options{MaxConcurrentReconciles: issuerWorkers}
	must((&controllers.IssuerReconciler{Client: mgr.GetClient(), Accounts: accounts}).SetupWithManager(mgr, issuerOptions))
	must((&controllers.IssuerReconciler{Client: mgr.GetClient(), Accounts: accounts, ClusterScoped: true}).SetupWithManager(mgr, issuerOptions))
	// Events are written from a bounded queue, after the writes of issuances in a burst: while
	// Certificates reconcile they wait, up to kube.EventHold.
	hostname, _ := os.Hostname()
	recorder := kube.NewEventWriter(mgr.GetClient(), mgr.GetScheme(), "certpilot", "certpilot-"+hostname, ctrl.Log.WithName("events"))
	certificatesActive := kube.NewActivity()
	recorder.HoldWhile(certificatesActive, kube.EventHold)
	must(mgr.Add(recorder))
	// The names of the Secrets the cache leaves out, so that a first issuance learns without a
	// request whether its secretName is free.
	secretNames, err := kube.NewSecretNames(restConfig, cache.Options{Scheme: scheme, HTTPClient: mgr.GetHTTPClient(), Mapper: mgr.GetRESTMapper()},
		cacheOptions.DefaultNamespaces)
	if err != nil {
		log.Error(err, "Unable to create the cache of Secret names")
		os.Exit(1)
	}
	must(mgr.Add(secretNames))
	must((&controllers.CertificateReconciler{
		Client:      mgr.GetClient(),
		APIReader:   mgr.GetAPIReader(),
		SecretNames: secretNames,
		Accounts:    accounts,
		Recorder:    recorder,
		Activity:    certificatesActive,
		Solvers: &solver.Deps{
			Client:       mgr.GetClient(),
			APIReader:    mgr.GetAPIReader(),
			Recorder:     recorder,
			Shards:       &solver.ShardWriter{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), MaxHold: challengeHold},
			Mounts:       &solver.MountTracker{},
			CheckTimeout: selfCheckTimeout,
		},
		// With --issuer-workers-max, one issuer's CA may hold at most that many workers: the
		// rest serve the Certificates of other issuers however slowly it answers.
		IssuerGate: &acme.Gate{PerKey: issuerWorkersMax},
		// Each namespace's new orders per account, and the account's pause after a rate limit.
		Orders: &budget.Ledger{Limit: budget.Limit{Orders: namespaceOrders, Per: time.Hour}},
	}).SetupWithManager(ctx, mgr, controller.Options{MaxConcurrentReconciles: certificateWorkers}))
	// Injection is its own controller: a few workers, since most Certificates inject nothing.
	// It runs with no kind too: it still removes its finalizer from Certificates.
	kinds := splitList(injectKinds)
	for _, kind := range kinds {
		if !slices.Contains([]string{certpilotv1alpha1.InjectKindDeployment, certpilotv1alpha1.InjectKindStatefulSet, certpilotv1alpha1.InjectKindDaemonSet}, kind) {
			log.Error(nil, "Invalid --inject-kinds: unknown kind", "kind", kind)
			os.Exit(1)
		}
	}
	must((&controllers.InjectionReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  recorder,
		Kinds:     append([]string{}, kinds...), // not nil: empty is none
	}).SetupWithManager(ctx, mgr, controller.Options{MaxConcurrentReconciles: 2}))
	metrics.Registry.MustRegister(&controllers.CertificateCollector{Reader: mgr.GetCache(), Elected: mgr.Elected()})

	// A source reconcile is a few cached reads and applies: two workers each are plenty.
	sources := source.Options{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder,
		Controller: controller.Options{MaxConcurrentReconciles: 2}, Namespaces: slices.Collect(maps.Keys(cacheOptions.DefaultNamespaces))}
	if ingressSource {
		must(source.NewIngressReconciler(sources).SetupWithManager(ctx, mgr))
	}
	if gatewaySource {
		must(source.SetupGatewayWhenServed(mgr, sources, source.GatewayAPICheckInterval))
	}

	must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	must(mgr.AddReadyzCheck("readyz", healthz.Ping))

	log.Info("Starting the manager")
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}

// metricsOptions serves /metrics on addr: plain HTTP, or with secure HTTPS to clients that the
// apiserver authenticates and authorises (internal/metricsauth; the manager's RBAC grants
// the TokenReviews and SubjectAccessReviews they create).
func metricsOptions(addr string, secure bool, certDir string, audiences []string) metricsserver.Options {
	options := metricsserver.Options{BindAddress: addr}
	if secure {
		options.SecureServing = true
		options.CertDir = certDir
		options.FilterProvider = metricsauth.FilterProvider(metricsauth.Options{Audiences: audiences})
	}
	return options
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(value string) []string {
	var items []string
	for _, item := range strings.Split(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func must(err error) {
	if err != nil {
		ctrl.Log.Error(err, "Setup failed")
		os.Exit(1)
	}
}
