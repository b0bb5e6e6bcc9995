// Package metricsauth guards the manager's /metrics endpoint: a request is served only when its
// bearer token is one the apiserver authenticates (TokenReview) and the user it names may GET the
// path (SubjectAccessReview on the non-resource URL), as controller-runtime's
// pkg/metrics/filters does. It is written against client-go's typed clients because that
// package pulls k8s.io/apiserver into the binary: measured on the manager, 50.9 MB → 80.9 MB
// (docs/reliability.md, "Secrets and privileges").
package metricsauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
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
	// maxCached bounds the cache: a client sending endless random tokens cannot grow it.
	maxCached = 1024
	// reviewTimeout bounds each review request to the apiserver.
	reviewTimeout = 10 * time.Second
)

// WithAuthenticationAndAuthorization is a metricsserver.Options.FilterProvider.
func WithAuthenticationAndAuthorization(config *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	authn, err := authenticationclient.NewForConfigAndClient(config, httpClient)
	if err != nil {
		return nil, err
	}
	authz, err := authorizationclient.NewForConfigAndClient(config, httpClient)
	if err != nil {
		return nil, err
	}
	g := &guard{tokens: authn.TokenReviews(), access: authz.SubjectAccessReviews(), decisions: map[[32]byte]decision{}, now: time.Now}
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

type decision struct {
	status  int
	message string
	expires time.Time
}

type guard struct {
	tokens authenticationclient.TokenReviewInterface
	access authorizationclient.SubjectAccessReviewInterface
	now    func() time.Time

	mu        sync.Mutex
	decisions map[[32]byte]decision
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
	cached, found := g.decisions[key]
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
	if len(g.decisions) >= maxCached {
		clear(g.decisions)
	}
	g.decisions[key] = d
	g.mu.Unlock()
	return d.status, d.message
}

func (g *guard) review(req *http.Request, token, verb string) decision {
	ctx, cancel := context.WithTimeout(req.Context(), reviewTimeout)
	defer cancel()
	reviewed, err := g.tokens.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return decision{status: http.StatusInternalServerError, message: "Authentication failed: the apiserver did not review the token"}
	}
	if !reviewed.Status.Authenticated {
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
