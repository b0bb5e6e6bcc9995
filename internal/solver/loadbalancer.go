package solver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/outcome"
	"github.com/certpilot/certpilot/internal/pki"
)

// busyRetry is how soon a Certificate waiting for a tls-alpn-01 name another Certificate holds
// looks again.
const busyRetry = 5 * time.Second

// loadBalancerSolver answers tls-alpn-01 or http-01 through the load balancer that owns ports
// 443 and 80 for the names: it writes the responses into the load balancer's challenge shards,
// makes the Deployment mount them, and self-checks them as the CA's validator will.
type loadBalancerSolver struct {
	deps         *Deps
	owner        Owner
	source       Source
	typ          string
	ref          certpilotv1alpha1.LoadBalancerRef
	probeAddress string
}

func newLoadBalancer(deps *Deps, owner Owner, source Source, typ string, ref certpilotv1alpha1.LoadBalancerRef, probeAddress string) *loadBalancerSolver {
	return &loadBalancerSolver{deps: deps, owner: owner, source: source, typ: typ, ref: ref, probeAddress: probeAddress}
}

func (s *loadBalancerSolver) Type() string         { return s.typ }
func (s *loadBalancerSolver) AutoRenewable() bool  { return true }
func (s *loadBalancerSolver) NeedsFinalizer() bool { return false }

func (s *loadBalancerSolver) loadBalancer() types.NamespacedName {
	namespace := s.ref.Namespace
	if namespace == "" {
		namespace = s.source.DefaultNamespace
	}
	return types.NamespacedName{Namespace: namespace, Name: s.ref.Name}
}

// Prepare enforces the tenant boundary before anything is written: a Certificate may publish
// through a load balancer of its own namespace; through another namespace's only when the
// solver is a ClusterIssuer's or the Deployment lists the namespace in its
// certpilot.dev/allowed-namespaces annotation. A probe address other than the default must be
// listed in the Deployment's certpilot.dev/probe-addresses annotation, unless a ClusterIssuer
// set it: the controller dials it, and must not be pointed anywhere a tenant likes.
func (s *loadBalancerSolver) Prepare(ctx context.Context) error {
	lb := s.loadBalancer()
	deployment, err := s.deploymentMetadata(ctx, lb)
	if err != nil {
		return err
	}
	if !s.source.ClusterIssuer && lb.Namespace != s.owner.Namespace &&
		!listed(deployment.Annotations[certpilotv1alpha1.AnnotationAllowedNamespaces], s.owner.Namespace) {
		return stalledf("LoadBalancerNotAllowed",
			"the load balancer Deployment %s is in another namespace and does not accept challenges from namespace %s: its owner must add %s to its annotation %s (or an administrator sets the solver in a ClusterIssuer)",
			lb, s.owner.Namespace, s.owner.Namespace, certpilotv1alpha1.AnnotationAllowedNamespaces)
	}
	if s.probeAddress != "" && !s.source.ClusterIssuer &&
		!listed(deployment.Annotations[certpilotv1alpha1.AnnotationProbeAddresses], s.probeAddress) {
		return stalledf("ProbeAddressNotAllowed",
			"probeAddress %s is not listed in the annotation %s of the load balancer Deployment %s: its owner must list it (or an administrator sets it in a ClusterIssuer's solver)",
			s.probeAddress, certpilotv1alpha1.AnnotationProbeAddresses, lb)
	}
	return nil
}

// deploymentMetadata reads the load balancer Deployment's metadata from the cache (which holds
// Deployments as metadata only), or from the API when the cache does not cover its namespace.
func (s *loadBalancerSolver) deploymentMetadata(ctx context.Context, lb types.NamespacedName) (*metav1.PartialObjectMetadata, error) {
	deployment := &metav1.PartialObjectMetadata{}
	deployment.SetGroupVersionKind(deploymentGVK)
	err := s.deps.Client.Get(ctx, lb, deployment)
	if err != nil && !apierrors.IsNotFound(err) {
		err = s.deps.APIReader.Get(ctx, lb, deployment)
	}
	if apierrors.IsNotFound(err) {
		return nil, outcome.NewWait(30*time.Second, "LoadBalancerNotFound", "the load balancer Deployment %s does not exist", lb)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the load balancer Deployment %s: %w", lb, err)
	}
	return deployment, nil
}

// listed reports whether a comma-separated annotation value lists value or "*".
func listed(annotation, value string) bool {
	for _, item := range strings.Split(annotation, ",") {
		if item = strings.TrimSpace(item); item == value || item == "*" {
			return true
		}
	}
	return false
}

// key is the contract's key of a challenge's response.
func (s *loadBalancerSolver) key(c Challenge) string {
	if s.typ == ChallengeHTTP01 {
		return certpilotv1alpha1.HTTP01Key(c.Token)
	}
	// The validator's server name: for an IP address, its reverse-DNS name (RFC 8738).
	return certpilotv1alpha1.TLSALPN01Key(pki.TLSALPN01ServerName(c.DNSName))
}

// Present writes the responses into the load balancer's shards (and into the single Secret of
// earlier versions while it exists) and makes sure the Deployment mounts them. A tls-alpn-01
// name another Certificate is validating through the same load balancer is waited for, with a
// condition naming that Certificate: the load balancer can serve one challenge certificate per
// name.
func (s *loadBalancerSolver) Present(ctx context.Context, challenges []Challenge) error {
	lb := s.loadBalancer()
	now := s.deps.now()
	var entries []Entry
	for _, c := range challenges {
		value := []byte(c.KeyAuthorization)
		if s.typ == ChallengeTLSALPN01 {
			encoded, err := pki.TLSALPN01Certificate(c.DNSName, c.KeyAuthorization, now)
			if err != nil {
				return outcome.NewStalled("InvalidChallenge", "%v", err)
			}
			value = encoded
		}
		entries = append(entries, Entry{Key: s.key(c), Value: value, Satisfied: s.satisfied(c)})
	}
	// The shard write, the look for the Secret of earlier versions and the check of the
	// Deployment's mount do not depend on each other: they go out together, so that a present
	// that needs all three waits for one round trip, not three.
	var legacy *corev1.Secret
	var legacyErr, mountErr error
	var others sync.WaitGroup
	others.Go(func() { legacy, legacyErr = s.deps.Shards.LegacySecret(ctx, lb.Namespace, lb.Name) })
	others.Go(func() { mountErr = s.deps.Mounts.Ensure(ctx, s.deps, lb) })
	err := s.deps.Shards.Put(ctx, lb.Namespace, lb.Name, s.owner.ID(), entries, s.replaceable(ctx, now))
	others.Wait()
	var held *HeldError
	if errors.As(err, &held) {
		return outcome.NewWait(busyRetry, "ChallengeNameBusy",
			"%s through load balancer %s is held by Certificate %s, which is being validated for the same name; this Certificate goes on once it is released",
			held.Key, lb, held.Holder)
	}
	if err != nil {
		return err
	}
	if legacyErr != nil {
		return legacyErr
	}
	if legacy != nil {
		if err := s.deps.Shards.PutLegacy(ctx, legacy, entries); err != nil {
			return err
		}
	}
	return mountErr
}

// satisfied says whether a stored value already answers c (a tls-alpn-01 certificate is made
// anew each time, so bytes differ; http-01 values are compared as they are).
func (s *loadBalancerSolver) satisfied(c Challenge) func([]byte) bool {
	if s.typ != ChallengeTLSALPN01 {
		return nil
	}
	return func(current []byte) bool {
		cert, err := pki.ParseLeaf(current)
		return err == nil && s.deps.now().Before(cert.NotAfter.Add(-10*time.Minute)) &&
			acme.VerifyTLSALPN01Certificate(cert, c.DNSName, c.KeyAuthorization) == nil
	}
}

// replaceable lets a response of another Certificate be replaced when it can no longer be
// validated: its Certificate no longer exists (deleted mid-order), its tls-alpn-01 challenge
// certificate expired (its writer died and never came back), or the value is not a
// certificate at all. http-01 tokens never collide.
func (s *loadBalancerSolver) replaceable(ctx context.Context, now time.Time) func(key, holder string, current []byte) bool {
	return func(key, holder string, current []byte) bool {
		if s.typ != ChallengeTLSALPN01 {
			return true
		}
		if namespace, name, ok := strings.Cut(holder, "/"); ok {
			// The manager's cache holds every Certificate it reconciles: no request.
			certificate := &certpilotv1alpha1.Certificate{}
			if err := s.deps.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, certificate); apierrors.IsNotFound(err) {
				return true
			}
		}
		cert, err := pki.ParseLeaf(current)
		return err != nil || expired(cert, now)
	}
}

func expired(cert *x509.Certificate, now time.Time) bool { return !now.Before(cert.NotAfter) }

// Check verifies the response as the CA's validator will see it: a TLS handshake with ALPN
// acme-tls/1, or an HTTP GET of the token, at the probe address (default: the name itself).
func (s *loadBalancerSolver) Check(ctx context.Context, c Challenge) error {
	// The load balancer picks a new response up from its watch of the shard within
	// milliseconds, but not at once: a few quick retries (publicationGrace in all) cost a worker
	// far less than a failed check, which is written and looked at again seconds later.
	var err error
	_ = wait.ExponentialBackoffWithContext(ctx, publicationBackoff, func(ctx context.Context) (bool, error) {
		err = s.checkOnce(ctx, c)
		return err == nil, nil
	})
	return err
}

// publicationBackoff retries a self-check for about 3 s (50 ms, doubling, seven tries): the time
// a load balancer watching its shards takes to serve a response just written, under load. At
// 1,000 certificates of 3 names each on 2 cores, 1.5 s left 291 of 3,405 checks failing on a
// response the edge had not been sent yet (the apiserver's watch lagging), each a requeue.
var publicationBackoff = wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 7}

func (s *loadBalancerSolver) checkOnce(ctx context.Context, c Challenge) error {
	if s.typ == ChallengeHTTP01 {
		address := s.probeAddress
		if address == "" {
			address = net.JoinHostPort(c.DNSName, "80")
		}
		return acme.CheckHTTP01(ctx, address, c.DNSName, c.Token, c.KeyAuthorization)
	}
	address := s.probeAddress
	if address == "" {
		address = net.JoinHostPort(c.DNSName, "443")
	}
	return acme.CheckTLSALPN01(ctx, address, c.DNSName, c.KeyAuthorization)
}

func (s *loadBalancerSolver) NotVisible(failures []string, pending int) (string, string) {
	return "SelfCheckFailed", fmt.Sprintf(
		"%d of %d challenge responses are not served by the load balancer yet; the CA is not asked to validate until they are (see status.order.challenges): %s",
		len(failures), pending, joinFailures(failures))
}

// CleanUp removes this Certificate's responses; responses another Certificate wrote since stay.
func (s *loadBalancerSolver) CleanUp(ctx context.Context, challenges []Challenge) error {
	lb := s.loadBalancer()
	var keys []string
	for _, c := range challenges {
		if c.Type != s.typ || (s.typ == ChallengeHTTP01 && c.Token == "") {
			continue
		}
		if key := s.key(c); !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	removed, err := s.deps.Shards.Remove(ctx, lb.Namespace, lb.Name, s.owner.ID(), keys)
	if err != nil {
		return err
	}
	if len(removed) > 0 {
		ctrl.LoggerFrom(ctx).V(1).Info("Removed challenge responses", "loadBalancer", lb.String(), "count", len(removed))
	}
	return s.deps.Shards.RemoveLegacy(ctx, lb.Namespace, lb.Name, removed)
}
