package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/yaml"
)

// Mode is how the edge carries ordinary (non-challenge) TLS connections.
type Mode string

const (
	// ModeTerminate ends TLS at the edge and proxies HTTP/1.1 and HTTP/2 requests to HTTP
	// upstreams by host and path prefix.
	ModeTerminate Mode = "terminate"
	// ModePassthrough reads only the ClientHello and splices the connection, byte for byte, to
	// an upstream TLS endpoint chosen by SNI.
	ModePassthrough Mode = "passthrough"
)

// RouteConfig is the edge's route file (YAML or JSON). See docs/edge.md.
type RouteConfig struct {
	// Routes are matched by host: an exact name first, then a wildcard (*.example.com, one
	// label), then "*" (any host, and connections without SNI); among routes of the same host,
	// the longest matching pathPrefix wins (terminate mode only).
	Routes []Route `json:"routes"`
	// Timeouts of upstream connections and requests.
	Timeouts Timeouts `json:"timeouts,omitempty"`
}

// Route sends the traffic of one host (and path prefix) to one upstream.
type Route struct {
	// Host is an exact DNS name, a wildcard "*.example.com", or "*".
	Host string `json:"host"`
	// PathPrefix limits the route to request paths that start with it (terminate mode).
	PathPrefix string `json:"pathPrefix,omitempty"`
	// Upstream is an http:// or https:// URL in terminate mode, host:port of a TLS endpoint in
	// passthrough mode.
	Upstream string `json:"upstream"`
	// ProxyProtocol sends a PROXY protocol v2 header before the spliced bytes, so that the
	// upstream sees the client's address (passthrough mode; the upstream must expect it).
	ProxyProtocol bool `json:"proxyProtocol,omitempty"`
	// InsecureSkipVerify skips verifying an https:// upstream's certificate (terminate mode).
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// Timeouts bound upstream work; zero values take the defaults.
type Timeouts struct {
	// Dial bounds connecting to an upstream (default 5s).
	Dial Duration `json:"dial,omitempty"`
	// ResponseHeader bounds the wait for an upstream's response headers (default 60s).
	ResponseHeader Duration `json:"responseHeader,omitempty"`
	// Idle closes idle upstream keep-alive connections (default 90s).
	Idle Duration `json:"idle,omitempty"`
}

// Duration is a time.Duration written as "5s" in the route file.
type Duration struct{ time.Duration }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(data []byte) error {
	text := strings.Trim(string(data), `"`)
	parsed, err := time.ParseDuration(text)
	if err != nil {
		return fmt.Errorf("duration %q: %w", text, err)
	}
	d.Duration = parsed
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

func (t Timeouts) withDefaults() Timeouts {
	if t.Dial.Duration <= 0 {
		t.Dial.Duration = 5 * time.Second
	}
	if t.ResponseHeader.Duration <= 0 {
		t.ResponseHeader.Duration = 60 * time.Second
	}
	if t.Idle.Duration <= 0 {
		t.Idle.Duration = 90 * time.Second
	}
	return t
}

// ParseRouteConfig parses and checks a route file for mode. Unknown fields are errors, so a
// typo does not silently drop a setting.
func ParseRouteConfig(data []byte, mode Mode) (*RouteConfig, error) {
	var config RouteConfig
	if err := yaml.UnmarshalStrict(data, &config); err != nil {
		return nil, fmt.Errorf("parsing the route file: %w", err)
	}
	for i := range config.Routes {
		route := &config.Routes[i]
		route.Host = strings.ToLower(strings.TrimSuffix(route.Host, "."))
		if err := route.check(mode); err != nil {
			return nil, fmt.Errorf("route %d (host %q): %w", i+1, route.Host, err)
		}
	}
	config.Timeouts = config.Timeouts.withDefaults()
	return &config, nil
}

func (r *Route) check(mode Mode) error {
	switch {
	case r.Host == "":
		return errors.New("host is required (use \"*\" for any host)")
	case r.Host != "*" && strings.Contains(strings.TrimPrefix(r.Host, "*."), "*"):
		return errors.New("a wildcard host is \"*\" or \"*.\" followed by a name")
	case r.Upstream == "":
		return errors.New("upstream is required")
	}
	switch mode {
	case ModeTerminate:
		target, err := url.Parse(r.Upstream)
		if err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
		if (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
			return fmt.Errorf("upstream %q must be an http:// or https:// URL in terminate mode", r.Upstream)
		}
		if r.ProxyProtocol {
			return errors.New("proxyProtocol applies to passthrough mode only")
		}
		if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
			return errors.New("pathPrefix must start with /")
		}
	case ModePassthrough:
		if _, _, err := net.SplitHostPort(r.Upstream); err != nil {
			return fmt.Errorf("upstream %q must be host:port in passthrough mode: %w", r.Upstream, err)
		}
		if r.PathPrefix != "" {
			return errors.New("pathPrefix applies to terminate mode only: passthrough sees no paths")
		}
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	return nil
}

// routeTable is one immutable, compiled RouteConfig.
type routeTable struct {
	config *RouteConfig
	// byHost maps a host ("*" and "*.example.com" included) to its routes, longest path prefix
	// first.
	byHost map[string][]*compiledRoute
}

type compiledRoute struct {
	Route
	target *url.URL // terminate mode
	// handler (HTTP/2 clients) and http1 (HTTP/1.1 clients) are set by the terminate proxy.
	handler any
	http1   *upstreamClient
}

func compileRoutes(config *RouteConfig) *routeTable {
	table := &routeTable{config: config, byHost: map[string][]*compiledRoute{}}
	for _, route := range config.Routes {
		compiled := &compiledRoute{Route: route}
		compiled.target, _ = url.Parse(route.Upstream) // checked by ParseRouteConfig
		table.byHost[route.Host] = append(table.byHost[route.Host], compiled)
	}
	for _, routes := range table.byHost {
		slices.SortStableFunc(routes, func(a, b *compiledRoute) int { return len(b.PathPrefix) - len(a.PathPrefix) })
	}
	return table
}

// match returns the route of host and path ("" in passthrough mode), or nil: routes of host
// itself, then of its parent's wildcard ("*.example.com"), then of "*". It allocates nothing for
// a lower-case host (it runs for every request and connection).
func (t *routeTable) match(host, path string) *compiledRoute {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host != "" {
		if route := matchPath(t.byHost[host], path); route != nil {
			return route
		}
		if _, parent, ok := strings.Cut(host, "."); ok && parent != "" {
			var buffer [256]byte
			wildcard := append(append(buffer[:0], "*."...), parent...)
			if route := matchPath(t.byHost[string(wildcard)], path); route != nil { // no string allocated for a map index
				return route
			}
		}
	}
	return matchPath(t.byHost["*"], path)
}

// matchPath returns the first of routes (longest path prefix first) whose prefix path has.
func matchPath(routes []*compiledRoute, path string) *compiledRoute {
	for _, route := range routes {
		if route.PathPrefix == "" || pathHasPrefix(path, route.PathPrefix) {
			return route
		}
	}
	return nil
}

// pathHasPrefix reports whether path is prefix or below it: /api matches /api and /api/x, not
// /apix (a prefix that ends in / matches any path that starts with it).
func pathHasPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// Routes holds the current route table; every load replaces it atomically, so requests and
// connections in flight keep the route they were given.
type Routes struct {
	mode Mode
	// pending is true between Expect and the first Set: the edge is not ready meanwhile.
	pending atomic.Bool
	table   atomic.Pointer[routeTable]
	onSwap  func(*routeTable) // the terminate proxy compiles handlers here
	metrics *Metrics
}

// NewRoutes returns an empty route table for mode.
func NewRoutes(mode Mode) *Routes {
	r := &Routes{mode: mode}
	r.table.Store(compileRoutes(&RouteConfig{Timeouts: Timeouts{}.withDefaults()}))
	return r
}

// Expect marks the routes as pending until the first Set or Load, so that the edge does not
// report ready (and answer 404 to everything) before its route file has been read.
func (r *Routes) Expect() { r.pending.Store(true) }

// Loaded reports whether no load is pending (see Expect).
func (r *Routes) Loaded() bool { return !r.pending.Load() }

// Mode returns the mode the routes are for.
func (r *Routes) Mode() Mode { return r.mode }

// Set makes config the current route table.
func (r *Routes) Set(config *RouteConfig) {
	table := compileRoutes(config)
	if r.onSwap != nil {
		r.onSwap(table)
	}
	r.table.Store(table)
	r.pending.Store(false)
}

// Load parses data as a route file and makes it current; on error the current table stays.
func (r *Routes) Load(data []byte) error {
	config, err := ParseRouteConfig(data, r.mode)
	if r.metrics != nil {
		r.metrics.reload(err)
	}
	if err != nil {
		return err
	}
	r.Set(config)
	return nil
}

func (r *Routes) current() *routeTable { return r.table.Load() }

// RouteFileSource loads a route file into Routes and reloads it when it changes (a mounted
// ConfigMap's ..data swap, or a file rewritten in place), and every ResyncInterval.
type RouteFileSource struct {
	Path           string
	Routes         *Routes
	Log            logr.Logger
	ResyncInterval time.Duration
}

// Run loads the file (an error then is fatal), then reloads it on changes until ctx is done. A
// bad file later is logged and the routes in force stay.
func (s *RouteFileSource) Run(ctx context.Context) error {
	var last []byte
	load := func() error {
		data, err := os.ReadFile(s.Path)
		if err != nil {
			return fmt.Errorf("reading the route file: %w", err)
		}
		if last != nil && string(data) == string(last) {
			return nil
		}
		if err := s.Routes.Load(data); err != nil {
			return err
		}
		last = data
		s.Log.Info("Loaded the route file", "path", s.Path, "routes", len(s.Routes.current().config.Routes))
		return nil
	}
	return watchDirs(ctx, []string{filepath.Dir(s.Path)}, s.ResyncInterval, load, s.Log)
}
