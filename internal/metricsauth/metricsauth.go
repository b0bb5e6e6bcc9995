// Package metricsauth guards the manager's /metrics endpoint: a request is served only when its
// bearer token is one the apiserver authenticates (TokenReview) and the user it names may GET the
// path (SubjectAccessReview on the non-resource URL), as controller-runtime's
// pkg/metrics/filters does. It is written against client-go's typed clients because that
// package pulls k8s.io/apiserver into the binary: measured on the manager, 50.9 MB → 80.9 MB
// (docs/reliability.md, "Secrets and privileges").
//
// Two bounds beyond controller-runtime's: a TokenReview names the audiences the manager accepts
// (Options.Audiences; none: the apiserver's own), and the decisions are kept in a bounded LRU
// (Options.CacheSize entries), so a flood of distinct tokens evicts the oldest decisions one by
// one and memory stays bounded.
package metricsauth

import (
	"container/list"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// How long a decision is reused, as controller-runtime's filters do: an allowed token for a
// minute (a revoked token stops working within it), a denial for 30 s.
const (
	allowTTL = time.Minute
	denyTTL  = 30 * time.Second
	// DefaultCacheSize is how many decisions are kept (least recently used evicted first): a
	// client sending endless random tokens cannot grow the cache past it, and evicts the
	// decisions of the scrapers it does not touch one by one, never all at once.
	DefaultCacheSize = 1024
	// reviewTimeout bounds each review request to the apiserver.
	reviewTimeout = 10 * time.Second
)

// Options configure the guard.
type Options struct {
	// Audiences are sent in every TokenReview: a token is accepted only when it was issued for
	// one of them (the apiserver says which in status.audiences). Empty: the apiserver's own
	// audiences (its --api-audiences, by default its service account issuer), as
	// controller-runtime's filters and the kubelet do: a Pod's ServiceAccount token is accepted,
	// a token projected for another audience (a Vault's, another service's) is not.
	Audiences []string
	// CacheSize bounds the cached decisions (DefaultCacheSize when 0).
	CacheSize int
}

// WithAuthenticationAndAuthorization is a metricsserver.Options.FilterProvider with the default
// Options.
func WithAuthenticationAndAuthorization(config *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	return FilterProvider(Options{})(config, httpClient)
}

// FilterProvider returns a metricsserver.Options.FilterProvider with options.
func FilterProvider(options Options) func(*rest.Config, *http.Client) (metricsserver.Filter, error) {
	return func(config *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
		authn, err := authenticationclient.NewForConfigAndClient(config, httpClient)
		if err != nil {
			return nil, err
		}
		authz, err := authorizationclient.NewForConfigAndClient(config, httpClient)
		if err != nil {
			return nil, err
		}
		g := newGuard(authn.TokenReviews(), authz.SubjectAccessReviews(), options)
		return func(log logr.Logger, handler http.Handler) (http.Handler, error) {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				status, message := g.check(req)
				if status != http.StatusOK {
					log.V(4).Info("Refused a metrics request", "status", status, "reason", message, "remote", req.RemoteAddr)
					http.Error(w, message, status)
					return
				}
				handler.ServeHTTP(w, req)
			}), nil
		}, nil
	}
}

type decision struct {
	status  int
	message string
	expires time.Time
}

type guard struct {
	tokens    authenticationclient.TokenReviewInterface
	access    authorizationclient.SubjectAccessReviewInterface
	audiences []string
	now       func() time.Time

	mu        sync.Mutex
	decisions *lru
}

func newGuard(tokens authenticationclient.TokenReviewInterface, access authorizationclient.SubjectAccessReviewInterface, options Options) *guard {
	size := options.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	return &guard{tokens: tokens, access: access, audiences: slices.Clone(options.Audiences), now: time.Now, decisions: newLRU(size)}
}

// check returns http.StatusOK when the request may be served, else the status and message to
// answer with. The message never repeats the token.
func (g *guard) check(req *http.Request) (int, string) {
	token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	token = strings.TrimSpace(token)
	if !ok || token == "" {
		return http.StatusUnauthorized, "Unauthorized: a bearer token is required"
	}
	verb := strings.ToLower(req.Method)
	key := sha256.Sum256([]byte(verb + "\x00" + req.URL.Path + "\x00" + token))
	now := g.now()
	g.mu.Lock()
	cached, found := g.decisions.get(key)
	g.mu.Unlock()
	if found && now.Before(cached.expires) {
		return cached.status, cached.message
	}
	d := g.review(req, token, verb)
	if d.status == http.StatusInternalServerError {
		return d.status, d.message // not cached: the apiserver may answer next time
	}
	d.expires = now.Add(denyTTL)
	if d.status == http.StatusOK {
		d.expires = now.Add(allowTTL)
	}
	g.mu.Lock()
	g.decisions.put(key, d)
	g.mu.Unlock()
	return d.status, d.message
}

func (g *guard) review(req *http.Request, token, verb string) decision {
	ctx, cancel := context.WithTimeout(req.Context(), reviewTimeout)
	defer cancel()
	reviewed, err := g.tokens.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: g.audiences}}, metav1.CreateOptions{})
	if err != nil {
		return decision{status: http.StatusInternalServerError, message: "Authentication failed: the apiserver did not review the token"}
	}
	if !reviewed.Status.Authenticated || !g.forUs(reviewed.Status.Audiences) {
		return decision{status: http.StatusUnauthorized, message: "Unauthorized"}
	}
	user := reviewed.Status.User
	extra := map[string]authorizationv1.ExtraValue{}
	for name, values := range user.Extra {
		extra[name] = authorizationv1.ExtraValue(values)
	}
	allowed, err := g.access.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: req.URL.Path, Verb: verb},
	}}, metav1.CreateOptions{})
	if err != nil {
		return decision{status: http.StatusInternalServerError, message: fmt.Sprintf("Authorization for user %s failed", user.Username)}
	}
	if !allowed.Status.Allowed {
		return decision{status: http.StatusForbidden, message: fmt.Sprintf("Authorization denied for user %s", user.Username)}
	}
	return decision{status: http.StatusOK}
}

// forUs reports whether a token the apiserver authenticated is for one of the guard's audiences:
// an authenticator that ignores spec.audiences answers without status.audiences, and that is
// not enough when audiences were asked for (the TokenReview API's rule for its clients).
func (g *guard) forUs(audiences []string) bool {
	if len(g.audiences) == 0 {
		return true
	}
	for _, audience := range audiences {
		if slices.Contains(g.audiences, audience) {
			return true
		}
	}
	return false
}

// lru is a bounded map of decisions: put evicts the least recently used entry when full. Its
// caller holds the guard's lock.
type lru struct {
	size    int
	order   *list.List // of *lruEntry, most recently used first
	entries map[[32]byte]*list.Element
}

type lruEntry struct {
	key      [32]byte
	decision decision
}

func newLRU(size int) *lru {
	return &lru{size: size, order: list.New(), entries: make(map[[32]byte]*list.Element, size)}
}

func (c *lru) get(key [32]byte) (decision, bool) {
	element, ok := c.entries[key]
	if !ok {
		return decision{}, false
	}
	c.order.MoveToFront(element)
	return element.Value.(*lruEntry).decision, true
}

func (c *lru) put(key [32]byte, d decision) {
	if element, ok := c.entries[key]; ok {
		element.Value.(*lruEntry).decision = d
		c.order.MoveToFront(element)
		return
	}
	if c.order.Len() >= c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*lruEntry).key)
	}
	c.entries[key] = c.order.PushFront(&lruEntry{key: key, decision: d})
}

func (c *lru) len() int { return c.order.Len() }
