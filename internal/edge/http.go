package edge

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HTTP01PathPrefix is where ACME servers fetch http-01 key authorizations (RFC 8555, 8.3).
const HTTP01PathPrefix = "/.well-known/acme-challenge/"

// NewHTTPHandler returns the handler of the edge's plain HTTP port. It answers
// GET (and HEAD) /.well-known/acme-challenge/<token> with the token's key authorization from
// challenges, 404 for unknown tokens, 405 for other methods on that path, and (for now) 404 for
// every other path.
func NewHTTPHandler(challenges *ChallengeStore) http.Handler {
	return newHTTPHandler(challenges, nil, nil)
}

// NewRedirectingHTTPHandler is NewHTTPHandler, except that every request outside
// /.well-known/acme-challenge/ is redirected (308, method and body kept) to the same URL over
// HTTPS, on httpsPort (0 or 443: the default port).
func NewRedirectingHTTPHandler(challenges *ChallengeStore, httpsPort int) http.Handler {
	return newHTTPHandler(challenges, redirectToHTTPS(httpsPort), nil)
}

// redirectToHTTPS returns a handler that redirects to the request's URL over HTTPS.
func redirectToHTTPS(httpsPort int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := hostOnly(r.Host)
		if host == "" {
			http.Error(w, "certpilot edge: a Host header is needed to redirect to HTTPS", http.StatusBadRequest)
			return
		}
		if strings.Contains(host, ":") { // IPv6 literal
			host = "[" + host + "]"
		}
		if httpsPort != 0 && httpsPort != 443 {
			host += ":" + strconv.Itoa(httpsPort)
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// newHTTPHandler answers http-01 and passes every other request to fallback (nil: 404).
func newHTTPHandler(challenges *ChallengeStore, fallback http.Handler, metrics *Metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, HTTP01PathPrefix)
		if !ok {
			if fallback != nil {
				fallback.ServeHTTP(w, r)
				return
			}
			http.NotFound(w, r)
			return
		}
		if token == "" || strings.Contains(token, "/") {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
			return
		}
		keyAuthorization, ok := challenges.KeyAuthorization(token)
		metrics.acmeAnswer(challengeTypeHTTP01, ok)
		if !ok {
			http.NotFound(w, r)
			return
		}
		header := w.Header()
		header.Set("Content-Type", "text/plain")
		header.Set("Content-Length", strconv.Itoa(len(keyAuthorization)))
		header.Set("X-Content-Type-Options", "nosniff")
		// Responses change with every order: no cache between the edge and the CA may keep one.
		header.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, keyAuthorization)
		}
	})
}

// logHTTPRequests writes an access log line per request of the HTTP listener (log nil: the
// handler itself). An http-01 token never reaches the log (see logPath).
func logHTTPRequests(handler http.Handler, log *AccessLog) http.Handler {
	if log == nil {
		return handler
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logged := &loggedResponse{ResponseWriter: w, started: time.Now()}
		handler.ServeHTTP(logged, r)
		log.write(&accessEntry{start: logged.started, listener: listenerHTTP, kind: accessKindRequest, client: r.RemoteAddr,
			host: r.Host, method: r.Method, path: r.URL.RequestURI(), protocol: r.Proto, status: logged.status, bytesSent: logged.bytes})
	})
}
