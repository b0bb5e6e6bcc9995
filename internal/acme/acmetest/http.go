package acmetest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

const problemPrefix = "urn:ietf:params:acme:error:"

// endpoint names a request for Stats.Requests.
func endpoint(r *http.Request) string {
	path := strings.TrimPrefix(r.URL.Path, "/")
	kind, rest, _ := strings.Cut(path, "/")
	switch {
	case kind == "order" && strings.HasSuffix(rest, "/finalize"):
		return "finalize"
	case kind == "authz", kind == "challenge", kind == "order", kind == "account", kind == "certificate":
		return kind
	case kind == "renewal-info":
		return "renewalInfo"
	case kind == "new-nonce":
		return "newNonce"
	case kind == "new-account":
		return "newAccount"
	case kind == "new-order":
		return "newOrder"
	case kind == "directory":
		return "directory"
	}
	return "other"
}

func (ca *CA) serveHTTP(w http.ResponseWriter, r *http.Request) {
	now := ca.opts.Now()
	name := endpoint(r)
	ca.mu.Lock()
	ca.stats.Requests[name]++
	ca.mu.Unlock()
	w.Header().Set("Replay-Nonce", nonce())
	w.Header().Set("Cache-Control", "no-store")
	if fault, ok := ca.activeFault(now); ok {
		ca.mu.Lock()
		ca.stats.Faults[fault.Kind]++
		ca.mu.Unlock()
		ca.fail(w, fault)
		return
	}
	switch name {
	case "directory":
		ca.directory(w)
	case "newNonce":
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusNoContent)
		}
	case "renewalInfo":
		ca.renewalInfo(w, r)
	default:
		if r.Method != http.MethodPost {
			problem(w, http.StatusMethodNotAllowed, "malformed", "POST required")
			return
		}
		request, err := readJWS(r)
		if err != nil {
			problem(w, http.StatusBadRequest, "malformed", err.Error())
			return
		}
		ca.mu.Lock()
		defer ca.mu.Unlock()
		if name == "newAccount" {
			ca.newAccount(w, request)
			return
		}
		acct, ok := ca.accounts[request.kid]
		if !ok {
			problem(w, http.StatusBadRequest, "accountDoesNotExist", "no account with key id "+request.kid)
			return
		}
		url := ca.server.URL + r.URL.Path
		switch name {
		case "account":
			writeJSON(w, http.StatusOK, accountJSON(acct), acct.url)
		case "newOrder":
			ca.newOrder(w, acct, request.payload, now)
		case "order":
			ca.getOrder(w, acct, url, now)
		case "authz":
			ca.getAuthz(w, acct, url)
		case "challenge":
			ca.acceptChallenge(w, acct, url, now)
		case "finalize":
			ca.finalize(w, acct, strings.TrimSuffix(url, "/finalize"), request.payload, now)
		case "certificate":
			ca.certificate(w, acct, url)
		default:
			problem(w, http.StatusNotFound, "malformed", "no such resource")
		}
	}
}

func (ca *CA) fail(w http.ResponseWriter, fault Fault) {
	switch fault.Kind {
	case FaultRateLimited:
		retryAfter := fault.RetryAfter
		if retryAfter <= 0 {
			retryAfter = time.Hour
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
		problem(w, http.StatusTooManyRequests, "rateLimited", "the CA is overloaded (injected fault)")
	case FaultTimeout:
		if hijacker, ok := w.(http.Hijacker); ok {
			if conn, _, err := hijacker.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	default:
		http.Error(w, "injected fault", http.StatusInternalServerError)
	}
}

func (ca *CA) directory(w http.ResponseWriter) {
	base := ca.server.URL
	profiles := map[string]string{}
	for name, lifetime := range ca.opts.Profiles {
		profiles[name] = fmt.Sprintf("certificates valid for %s", lifetime)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"newNonce":    base + "/new-nonce",
		"newAccount":  base + "/new-account",
		"newOrder":    base + "/new-order",
		"revokeCert":  base + "/revoke-cert",
		"keyChange":   base + "/key-change",
		"renewalInfo": base + "/renewal-info",
		"meta":        map[string]any{"profiles": profiles, "caaIdentities": []string{"acmetest.example"}},
	}, "")
}

type jwsRequest struct {
	kid     string
	jwk     json.RawMessage
	payload []byte
}

// readJWS decodes a flattened JWS (RFC 8555 section 6.2) without verifying it.
func readJWS(r *http.Request) (*jwsRequest, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var envelope struct {
		Protected, Payload string
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return nil, fmt.Errorf("not a JWS: %v", err)
	}
	header, err := base64.RawURLEncoding.DecodeString(envelope.Protected)
	if err != nil {
		return nil, fmt.Errorf("protected header: %v", err)
	}
	var protected struct {
		KID string          `json:"kid"`
		JWK json.RawMessage `json:"jwk"`
	}
	if err := json.Unmarshal(header, &protected); err != nil {
		return nil, fmt.Errorf("protected header: %v", err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(envelope.Payload)
	if err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	return &jwsRequest{kid: protected.KID, jwk: protected.JWK, payload: payload}, nil
}

func (ca *CA) newAccount(w http.ResponseWriter, request *jwsRequest) {
	var payload struct {
		Contact            []string `json:"contact"`
		OnlyReturnExisting bool     `json:"onlyReturnExisting"`
	}
	_ = json.Unmarshal(request.payload, &payload)
	var thumbprint string
	if len(request.jwk) > 0 {
		var err error
		if thumbprint, err = jwkThumbprint(request.jwk); err != nil {
			problem(w, http.StatusBadRequest, "badPublicKey", err.Error())
			return
		}
	} else if acct, ok := ca.accounts[request.kid]; ok {
		thumbprint = acct.thumbprint
	}
	if acct, ok := ca.byKey[thumbprint]; ok && thumbprint != "" {
		writeJSON(w, http.StatusOK, accountJSON(acct), acct.url)
		return
	}
	if payload.OnlyReturnExisting || thumbprint == "" {
		problem(w, http.StatusBadRequest, "accountDoesNotExist", "no account for this key")
		return
	}
	acct := &account{url: ca.newURL("account"), thumbprint: thumbprint, contact: payload.Contact}
	ca.accounts[acct.url] = acct
	ca.byKey[thumbprint] = acct
	writeJSON(w, http.StatusCreated, accountJSON(acct), acct.url)
}

func accountJSON(acct *account) map[string]any {
	return map[string]any{"status": "valid", "contact": acct.contact, "orders": acct.url + "/orders"}
}

func (ca *CA) newOrder(w http.ResponseWriter, acct *account, body []byte, now time.Time) {
	var payload struct {
		Identifiers []struct{ Type, Value string }
		Profile     string
		Replaces    string
	}
	if err := json.Unmarshal(body, &payload); err != nil || len(payload.Identifiers) == 0 {
		problem(w, http.StatusBadRequest, "malformed", "an order needs identifiers")
		return
	}
	profile := payload.Profile
	if profile == "" {
		profile = ca.profileNames()[0]
	}
	if _, ok := ca.opts.Profiles[profile]; !ok {
		problem(w, http.StatusBadRequest, "invalidProfile", "no profile "+profile)
		return
	}
	o := &order{url: ca.newURL("order"), account: acct, status: "pending", profile: profile,
		created: now, expires: now.Add(7 * 24 * time.Hour)}
	for _, id := range payload.Identifiers {
		o.names = append(o.names, strings.ToLower(id.Value))
	}
	if payload.Replaces != "" {
		replaced, ok := ca.byCertID[payload.Replaces]
		if !ok || replaced.account != acct {
			problem(w, http.StatusBadRequest, "malformed", "replaces names no certificate of this account")
			return
		}
		if replaced.replacedBy != nil && replaced.replacedBy.status != "invalid" {
			ca.stats.AlreadyReplaced++
			problem(w, http.StatusConflict, "alreadyReplaced", "the certificate "+payload.Replaces+" was replaced already by order "+replaced.replacedBy.url)
			return
		}
		replaced.replacedBy = o
		o.replaces = payload.Replaces
		ca.stats.Replacing++
	}
	for _, name := range o.names {
		a := &authz{url: ca.newURL("authz"), name: name, status: "pending", expires: now.Add(30 * 24 * time.Hour),
			token: nonce(), account: acct}
		a.chalURL = ca.newURL("challenge")
		ca.authzs[a.url] = a
		ca.chals[a.chalURL] = a
		if ca.pending[name] == nil {
			ca.pending[name] = map[*authz]bool{}
		}
		ca.pending[name][a] = true
		o.authzs = append(o.authzs, a)
	}
	ca.orders[o.url] = o
	ca.stats.Orders[o.names[0]]++
	writeJSON(w, http.StatusCreated, ca.orderJSON(o), o.url)
}

// refreshOrder moves an order to ready when its authorizations are valid, and to invalid when
// it expired unfinished.
func refreshOrder(o *order, now time.Time) {
	if o.status == "pending" && !now.Before(o.expires) {
		o.status = "invalid"
	}
	if o.status == "pending" && !slices.ContainsFunc(o.authzs, func(a *authz) bool { return a.status != "valid" }) {
		o.status = "ready"
	}
}

func (ca *CA) orderJSON(o *order) map[string]any {
	identifiers := make([]map[string]string, 0, len(o.names))
	for _, name := range o.names {
		identifiers = append(identifiers, map[string]string{"type": "dns", "value": name})
	}
	authzs := make([]string, 0, len(o.authzs))
	for _, a := range o.authzs {
		authzs = append(authzs, a.url)
	}
	body := map[string]any{
		"status": o.status, "expires": o.expires.UTC().Format(time.RFC3339), "identifiers": identifiers,
		"authorizations": authzs, "finalize": o.url + "/finalize", "profile": o.profile,
	}
	if o.replaces != "" {
		body["replaces"] = o.replaces
	}
	if o.certificate != "" {
		body["certificate"] = o.certificate
	}
	return body
}

func (ca *CA) getOrder(w http.ResponseWriter, acct *account, url string, now time.Time) {
	o, ok := ca.orders[url]
	if !ok || o.account != acct {
		problem(w, http.StatusNotFound, "malformed", "no such order")
		return
	}
	refreshOrder(o, now)
	writeJSON(w, http.StatusOK, ca.orderJSON(o), "")
}

func (ca *CA) authzJSON(a *authz) map[string]any {
	return map[string]any{
		"status": a.status, "expires": a.expires.UTC().Format(time.RFC3339),
		"identifier": map[string]string{"type": "dns", "value": a.name},
		"challenges": []map[string]string{{"type": "dns-01", "url": a.chalURL, "token": a.token, "status": a.status}},
	}
}

func (ca *CA) getAuthz(w http.ResponseWriter, acct *account, url string) {
	a, ok := ca.authzs[url]
	if !ok || a.account != acct {
		problem(w, http.StatusNotFound, "malformed", "no such authorization")
		return
	}
	writeJSON(w, http.StatusOK, ca.authzJSON(a), "")
}

// acceptChallenge validates nothing: the challenge, its authorization and, when it was the last,
// its orders become valid (ready).
func (ca *CA) acceptChallenge(w http.ResponseWriter, acct *account, url string, now time.Time) {
	a, ok := ca.chals[url]
	if !ok || a.account != acct {
		problem(w, http.StatusNotFound, "malformed", "no such challenge")
		return
	}
	if a.status == "pending" && now.Before(a.expires) {
		a.status = "valid"
	}
	w.Header().Set("Link", fmt.Sprintf("<%s>;rel=\"up\"", a.url))
	writeJSON(w, http.StatusOK, map[string]string{"type": "dns-01", "url": a.chalURL, "token": a.token, "status": a.status}, "")
}

func (ca *CA) finalize(w http.ResponseWriter, acct *account, orderURL string, body []byte, now time.Time) {
	o, ok := ca.orders[orderURL]
	if !ok || o.account != acct {
		problem(w, http.StatusNotFound, "malformed", "no such order")
		return
	}
	refreshOrder(o, now)
	if o.status != "ready" {
		problem(w, http.StatusForbidden, "orderNotReady", "the order is "+o.status)
		return
	}
	var payload struct{ CSR string }
	if err := json.Unmarshal(body, &payload); err != nil {
		problem(w, http.StatusBadRequest, "malformed", err.Error())
		return
	}
	der, err := base64.RawURLEncoding.DecodeString(payload.CSR)
	if err != nil {
		problem(w, http.StatusBadRequest, "badCSR", err.Error())
		return
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		problem(w, http.StatusBadRequest, "badCSR", err.Error())
		return
	}
	if !slices.Equal(slices.Sorted(slices.Values(lowerAll(csr.DNSNames))), slices.Sorted(slices.Values(o.names))) {
		problem(w, http.StatusBadRequest, "badCSR", "the CSR's names differ from the order's")
		return
	}
	cert, err := ca.issue(o, csr, now)
	if err != nil {
		problem(w, http.StatusInternalServerError, "serverInternal", err.Error())
		return
	}
	o.certificate = ca.newURL("certificate")
	ca.certs[o.certificate] = cert
	o.status = "valid"
	writeJSON(w, http.StatusOK, ca.orderJSON(o), o.url)
}

func (ca *CA) certificate(w http.ResponseWriter, acct *account, url string) {
	cert, ok := ca.certs[url]
	if !ok || cert.account != acct {
		problem(w, http.StatusNotFound, "malformed", "no such certificate")
		return
	}
	w.Header().Set("Content-Type", "application/pem-certificate-chain")
	w.WriteHeader(http.StatusOK)
	_ = pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: cert.der})
	_, _ = w.Write(ca.rootPEM)
}

func (ca *CA) renewalInfo(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/renewal-info/")
	ca.mu.Lock()
	cert, ok := ca.byCertID[id]
	ca.mu.Unlock()
	if !ok {
		problem(w, http.StatusNotFound, "malformed", "no certificate "+id)
		return
	}
	start, end := ca.opts.RenewalWindow(cert.record.NotBefore, cert.record.NotAfter)
	w.Header().Set("Retry-After", strconv.Itoa(int(ca.opts.RenewalInfoRetryAfter/time.Second)))
	writeJSON(w, http.StatusOK, map[string]any{"suggestedWindow": map[string]string{
		"start": start.UTC().Format(time.RFC3339), "end": end.UTC().Format(time.RFC3339),
	}}, "")
}

func writeJSON(w http.ResponseWriter, status int, body any, location string) {
	if location != "" {
		w.Header().Set("Location", location)
	}
	write(w, status, "application/json", body)
}

// write sends body as JSON with a Content-Length and no trailing newline: clients that decode
// the JSON and close the body then reach its end, and the connection is kept for the next
// request (a leftover newline would cost a TLS handshake per request).
func write(w http.ResponseWriter, status int, contentType string, body any) {
	data, _ := json.Marshal(body)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func problem(w http.ResponseWriter, status int, name, detail string) {
	write(w, status, "application/problem+json", map[string]any{"type": problemPrefix + name, "detail": detail, "status": status})
}

func nonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// jwkThumbprint is the RFC 7638 thumbprint of an EC or RSA JWK: SHA-256 over its required
// members in lexicographic order.
func jwkThumbprint(raw json.RawMessage) (string, error) {
	var jwk struct {
		Kty, Crv, X, Y, N, E string
	}
	if err := json.Unmarshal(raw, &jwk); err != nil {
		return "", err
	}
	var canonical string
	switch jwk.Kty {
	case "EC":
		canonical = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, jwk.Crv, jwk.X, jwk.Y)
	case "RSA":
		canonical = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, jwk.E, jwk.N)
	default:
		return "", fmt.Errorf("unsupported key type %q", jwk.Kty)
	}
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// certID is the RFC 9773 certificate identifier: base64url(AKI keyIdentifier) "."
// base64url(DER serial content octets).
func certID(cert *x509.Certificate) string {
	der, _ := asn1.Marshal(cert.SerialNumber)
	var serial asn1.RawValue
	_, _ = asn1.Unmarshal(der, &serial)
	encode := base64.RawURLEncoding.EncodeToString
	return encode(cert.AuthorityKeyId) + "." + encode(serial.Bytes)
}
