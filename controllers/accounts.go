package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/netguard"
	"github.com/certpilot/certpilot/internal/pki"
)

// accountKeyDataKey is the Secret key of an ACME account's private key.
const accountKeyDataKey = corev1.TLSPrivateKeyKey

// Accounts builds and caches one ACME client per issuer, rebuilt when the server, trust or
// account key change. Both the issuer and the certificate reconcilers use it.
type Accounts struct {
	// Reader reads Secrets straight from the API: account, EAB and TSIG keys are not certpilot's
	// own Secrets, so they are not in the manager's cache.
	Reader client.Reader
	// ClusterResourceNamespace holds the Secrets that ClusterIssuers name.
	ClusterResourceNamespace string
	// UserAgent identifies certpilot to the CA.
	UserAgent string
	// NamespacedDials decides which addresses the ACME clients of namespaced Issuers may
	// connect to: a tenant chose their servers (--allow-private-dials grants private ranges).
	// Nil allows any address. ClusterIssuers, which administrators write, are not restricted.
	NamespacedDials *netguard.Policy

	mu      sync.Mutex
	clients map[string]cachedClient
}

type cachedClient struct {
	fingerprint string
	client      *acme.Client
	// spec is the issuer's ACME spec the client was built for, and checked when the account key
	// Secret was last read.
	spec    string
	checked time.Time
}

// accountRecheck is how long a cached client is used without reading the account key Secret
// again (a reconcile of each of thousands of certificates would otherwise read it every time).
// A changed issuer spec rebuilds the client at once; a replaced key is seen within this time.
const accountRecheck = time.Minute

// SecretNamespace is where the Secrets an issuer names live.
func (a *Accounts) SecretNamespace(issuer certpilotv1alpha1.GenericIssuer) string {
	if issuer.GetNamespace() == "" {
		return a.ClusterResourceNamespace
	}
	return issuer.GetNamespace()
}

// ReadSecret reads a Secret an issuer names; a missing Secret is returned as (nil, nil).
func (a *Accounts) ReadSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return kube.ReadSecret(ctx, a.Reader, namespace, name)
}

// Client returns the ACME client of issuer's account. The account key Secret must exist (the
// issuer reconciler creates it); a key that cannot be read is a stalled error.
func (a *Accounts) Client(ctx context.Context, issuer certpilotv1alpha1.GenericIssuer) (*acme.Client, error) {
	spec := issuer.GetSpec().ACME
	namespace := a.SecretNamespace(issuer)
	cacheKey := issuer.Kind() + "/" + issuer.GetNamespace() + "/" + issuer.GetName()
	specKey := fingerprintOf(spec.Server, string(spec.CABundle), spec.PrivateKeySecretRef.Name, namespace)
	a.mu.Lock()
	recent, ok := a.clients[cacheKey]
	a.mu.Unlock()
	if ok && recent.spec == specKey && time.Since(recent.checked) < accountRecheck {
		return recent.client, nil
	}
	secret, err := a.ReadSecret(ctx, namespace, spec.PrivateKeySecretRef.Name)
	if err != nil {
		return nil, err
	}
	if secret == nil {
		return nil, fmt.Errorf("account key Secret %s/%s does not exist yet", namespace, spec.PrivateKeySecretRef.Name)
	}
	keyPEM := secret.Data[accountKeyDataKey]
	key, err := pki.DecodePrivateKey(keyPEM)
	if err != nil {
		return nil, stalled("InvalidAccountKey",
			"Secret %s/%s key %q does not hold a usable private key (%v); certpilot never replaces an existing account key: fix the Secret or delete it to register a new account",
			namespace, spec.PrivateKeySecretRef.Name, accountKeyDataKey, err)
	}

	if err := acme.CheckAccountKey(key); err != nil {
		return nil, stalled("UnsupportedAccountKey", "Secret %s/%s key %q: %v", namespace, spec.PrivateKeySecretRef.Name, accountKeyDataKey, err)
	}

	fingerprint := fingerprintOf(spec.Server, string(spec.CABundle), string(keyPEM))
	a.mu.Lock()
	cached, ok := a.clients[cacheKey]
	if ok && cached.fingerprint == fingerprint {
		cached.spec, cached.checked = specKey, time.Now()
		a.clients[cacheKey] = cached
		a.mu.Unlock()
		return cached.client, nil
	}
	a.mu.Unlock()

	acmeClient, err := acme.New(ctx, acme.Options{
		DirectoryURL:   spec.Server,
		AccountKey:     key,
		CABundle:       spec.CABundle,
		UserAgent:      a.UserAgent,
		ObserveRequest: observeACMERequest,
		DialPolicy:     a.dialPolicy(issuer),
	})
	if err != nil {
		if acme.IsPermanent(err) {
			return nil, stalled("InvalidACMEServer", "%v", err)
		}
		return nil, err
	}
	a.mu.Lock()
	if a.clients == nil {
		a.clients = map[string]cachedClient{}
	}
	a.clients[cacheKey] = cachedClient{fingerprint: fingerprint, client: acmeClient, spec: specKey, checked: time.Now()}
	a.mu.Unlock()
	return acmeClient, nil
}

// dialPolicy returns the dial policy of issuer's ACME client: NamespacedDials for an Issuer,
// none for a ClusterIssuer.
func (a *Accounts) dialPolicy(issuer certpilotv1alpha1.GenericIssuer) *netguard.Policy {
	if issuer.GetNamespace() == "" {
		return nil
	}
	return a.NamespacedDials
}

// WithDialPolicy returns ctx carrying the dial policy of issuer (netguard.WithPolicy), so that
// the dials made for its Certificates (self-checks, nameservers) obey what its ACME client obeys;
// ctx itself when issuer is not restricted.
func (a *Accounts) WithDialPolicy(ctx context.Context, issuer certpilotv1alpha1.GenericIssuer) context.Context {
	if policy := a.dialPolicy(issuer); policy != nil {
		return netguard.WithPolicy(ctx, *policy)
	}
	return ctx
}

// Reregister registers the issuer's key again after the CA said it no longer knows the account
// (a CA that was reset): the same key gets a new account, whose URL the client uses from now
// on. The issuer's status follows at its next recheck (its URI no longer matches the client's).
func (a *Accounts) Reregister(ctx context.Context, issuer certpilotv1alpha1.GenericIssuer, client *acme.Client) (string, error) {
	eab, err := a.ExternalAccountBinding(ctx, issuer)
	if err != nil {
		return "", err
	}
	return client.Register(ctx, issuer.GetSpec().ACME.Email, eab)
}

// Forget drops the cached client of an issuer (deleted, or its account changed).
func (a *Accounts) Forget(kind, namespace, name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.clients, kind+"/"+namespace+"/"+name)
}

// ExternalAccountBinding reads the EAB MAC key an issuer names.
func (a *Accounts) ExternalAccountBinding(ctx context.Context, issuer certpilotv1alpha1.GenericIssuer) (*acme.ExternalAccountBinding, error) {
	eab := issuer.GetSpec().ACME.ExternalAccountBinding
	if eab == nil {
		return nil, nil
	}
	namespace := a.SecretNamespace(issuer)
	secret, err := a.ReadSecret(ctx, namespace, eab.KeySecretRef.Name)
	if err != nil {
		return nil, err
	}
	if secret == nil {
		return nil, stalled("MissingEABSecret", "external account binding Secret %s/%s does not exist", namespace, eab.KeySecretRef.Name)
	}
	encoded, ok := secret.Data[eab.KeySecretRef.Key]
	if !ok {
		return nil, stalled("InvalidEABSecret", "external account binding Secret %s/%s has no key %q", namespace, eab.KeySecretRef.Name, eab.KeySecretRef.Key)
	}
	// CAs hand out the MAC key base64url-encoded without padding; accept padding and the
	// standard alphabet too, since people paste what they get.
	text := strings.TrimRight(strings.TrimSpace(string(encoded)), "=")
	text = strings.NewReplacer("+", "-", "/", "_").Replace(text)
	mac, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil || len(mac) == 0 {
		return nil, stalled("InvalidEABSecret", "external account binding Secret %s/%s key %q is not a base64url-encoded MAC key", namespace, eab.KeySecretRef.Name, eab.KeySecretRef.Key)
	}
	return &acme.ExternalAccountBinding{KeyID: eab.KeyID, HMACKey: mac}, nil
}

func fingerprintOf(parts ...string) string {
	hash := sha256.New()
	for _, part := range parts {
		fmt.Fprintf(hash, "%d:%s;", len(part), part)
	}
	return hex.EncodeToString(hash.Sum(nil))
}
