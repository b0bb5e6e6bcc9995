// Package solver answers ACME challenges: tls-alpn-01 and http-01 through a load balancer
// (challenge shard Secrets mounted into its Deployment, the contract in
// api/v1alpha1/contract.go), dns-01 with RFC 2136 dynamic updates or records a person creates,
// and dns-persist-01 with one record per name that the zone's owner sets once. The certificate
// flow (controllers/) calls Prepare, Present, Check and CleanUp; it knows no Secret layout and
// no DNS library.
package solver

import (
	"context"
	"fmt"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/outcome"
)

// Challenge is one ACME challenge to answer.
type Challenge struct {
	// DNSName is the name as in spec.dnsNames ("*." for a wildcard), or an IP address as in
	// spec.ipAddresses.
	DNSName string
	// Type is the ACME challenge type.
	Type string
	// Token is the challenge's token.
	Token string
	// KeyAuthorization is what the response proves (RFC 8555 section 8.1); empty when it cannot
	// be known (cleanup without the issuer's account): solvers that need it skip the challenge.
	KeyAuthorization string
	// Announced is true when the person who must act was already told (a manual record).
	Announced bool
	// Expires is when the CA's authorization for the name expires, if still pending then (the
	// order fails with it); zero when unknown. Let's Encrypt's tlsserver and shortlived profiles
	// give a person an hour, classic a week.
	Expires time.Time
	// IssuerDomainNames are the dns-persist-01 challenge's issuer-domain-names: the names a
	// record may give for the CA (its directory's caaIdentities when the challenge lists none).
	IssuerDomainNames []string
	// AccountURI is the issuer's ACME account URL, which a dns-persist-01 record must name.
	AccountURI string
}

// Same reports whether two challenges are one (the fields that identify a response).
func (c Challenge) Same(other Challenge) bool {
	return c.DNSName == other.DNSName && c.Type == other.Type && c.Token == other.Token &&
		c.KeyAuthorization == other.KeyAuthorization
}

// Solver publishes, checks and removes the responses of one solver spec for one Certificate.
// Its errors are classified (internal/outcome): Stalled when the spec or a referenced object
// must change, Wait when something is not there yet, anything else transient.
type Solver interface {
	// Type is the ACME challenge type the solver answers.
	Type() string
	// AutoRenewable is false when every renewal needs a person.
	AutoRenewable() bool
	// NeedsFinalizer is true when responses left behind by a Certificate deleted mid-order
	// would stay forever unless it cleans them up (TXT records in a zone). The load balancer's
	// shards need none: what a deleted Certificate leaves there is swept (MaxResponseAge), and
	// the names it held are free again.
	NeedsFinalizer() bool
	// Prepare checks, before an order is opened, what can be checked without writing: the
	// Secrets it reads, the tenant boundary, the probe address.
	Prepare(ctx context.Context) error
	// Present publishes the responses of challenges; it is idempotent.
	Present(ctx context.Context, challenges []Challenge) error
	// Check verifies that one response is visible as the CA will see it.
	Check(ctx context.Context, challenge Challenge) error
	// NotVisible is the condition reason and message when some checks failed.
	NotVisible(failures []string, pending int) (reason, message string)
	// CleanUp removes the responses of challenges this solver published; others are ignored.
	CleanUp(ctx context.Context, challenges []Challenge) error
}

// Owner is the Certificate whose challenges a solver answers.
type Owner struct {
	// Object is the Certificate, for Events.
	Object    client.Object
	Namespace string
	Name      string
}

// ID is how the owner is recorded as the writer of a response: "<namespace>/<name>".
func (o Owner) ID() string { return o.Namespace + "/" + o.Name }

// Source says who configured a solver spec, which decides where the objects it names live and
// how far it may reach.
type Source struct {
	// ClusterIssuer is true for a ClusterIssuer's default solver, set by an administrator: it may
	// use a load balancer in any namespace and any probe address.
	ClusterIssuer bool
	// Issuer describes the spec's origin for messages ("ClusterIssuer pebble", "the Certificate").
	Issuer string
	// DefaultNamespace is the namespace of a load balancer whose namespace is not set: the
	// Certificate's, or the namespaced Issuer's.
	DefaultNamespace string
	// SecretNamespace holds the Secrets the spec names (TSIG keys).
	SecretNamespace string
	// Names are the Certificate's names (as in spec.dnsNames) this spec validates.
	Names []string
	// Account returns the issuer's ACME account URL and the CA's issuer domain names (its
	// directory's caaIdentities), for solvers whose records name them (dns-persist-01) and
	// check them before an order is opened. Nil when the issuer is not at hand.
	Account func(ctx context.Context) (accountURI string, issuerDomainNames []string, err error)
}

// Deps are what solvers share across reconciles.
type Deps struct {
	// Client reads from the manager's cache (certpilot's Secrets, Deployment metadata) and
	// writes.
	Client client.Client
	// APIReader reads what the cache does not hold: Secrets certpilot does not own, a
	// Deployment's pod template.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	// Shards writes load balancers' challenge Secrets.
	Shards *ShardWriter
	// Mounts remembers which load balancers mount their shards.
	Mounts *MountTracker
	Clock  clock.PassiveClock
	// CheckTimeout bounds one self-check; zero means 10 s.
	CheckTimeout time.Duration

	// secretKeys are the TSIG keys read in the last secretKeyTTL.
	secretKeys secretKeys
}

func (d *Deps) now() time.Time {
	if d.Clock == nil {
		return time.Now()
	}
	return d.Clock.Now()
}

// New returns the solver of spec for owner.
func New(deps *Deps, owner Owner, spec *certpilotv1alpha1.Solver, source Source) (Solver, error) {
	switch {
	case spec.TLSALPN01 != nil:
		return newLoadBalancer(deps, owner, source, ChallengeTLSALPN01, spec.TLSALPN01.LoadBalancer, spec.TLSALPN01.ProbeAddress), nil
	case spec.HTTP01 != nil:
		return newLoadBalancer(deps, owner, source, ChallengeHTTP01, spec.HTTP01.LoadBalancer, spec.HTTP01.ProbeAddress), nil
	case spec.DNS01 != nil && spec.DNS01.RFC2136 != nil:
		return &rfc2136Solver{deps: deps, owner: owner, source: source, spec: spec.DNS01}, nil
	case spec.DNS01 != nil && spec.DNS01.Manual != nil:
		return &manualSolver{deps: deps, owner: owner, spec: spec.DNS01}, nil
	case spec.DNS01 != nil && spec.DNS01.Persist != nil:
		return newPersistSolver(deps, owner, source, spec.DNS01), nil
	}
	return nil, outcome.NewStalled("NoSolver", "the solver names no challenge type")
}

// ACME challenge types.
const (
	ChallengeTLSALPN01 = "tls-alpn-01"
	ChallengeHTTP01    = "http-01"
	ChallengeDNS01     = "dns-01"
	// ChallengeDNSPersist01 is the persistent DNS challenge (draft-ietf-acme-dns-persist).
	ChallengeDNSPersist01 = acme.ChallengeDNSPersist01
)

func stalledf(reason, format string, args ...any) error {
	return outcome.NewStalled(reason, format, args...)
}

// joinFailures shortens a list of check failures for a condition message.
func joinFailures(failures []string) string {
	if len(failures) == 1 {
		return failures[0]
	}
	return fmt.Sprintf("%s (and %d more)", failures[0], len(failures)-1)
}
