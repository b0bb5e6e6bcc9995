// Package netguard decides which addresses the manager may dial on behalf of a tenant: the ACME
// server of a namespaced Issuer, and whatever else a tenant's object names. A tenant must not be
// able to point the manager at the cluster's internal services or at the cloud's metadata
// endpoint and read what comes back.
//
// The rules, in order:
//
//   - never: link-local addresses (169.254.0.0/16, fe80::/10, which hold the metadata endpoints
//     of AWS, GCP and Azure), the other known metadata addresses (fd00:ec2::254,
//     100.100.100.200), unspecified, multicast and broadcast addresses. No grant changes this.
//   - only where a Policy grants them (an administrator's --allow-private-dials): loopback,
//     private (RFC 1918, fc00::/7), shared (100.64.0.0/10, often a cluster's pod or service
//     range) and the other special-purpose ranges.
//   - public addresses: always.
//
// The decision (Policy.Check) is a pure function of the address; Policy.Control applies it to
// every connection a net.Dialer makes, after name resolution, so a name that resolves to an
// internal address (DNS rebinding included) is refused as well. The package imports nothing
// from Kubernetes.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// Policy says which restricted addresses may be dialled. The zero Policy grants none: only
// public addresses.
type Policy struct {
	// Allow lists the prefixes an administrator granted. Addresses that are never dialled stay
	// refused even inside them.
	Allow []netip.Prefix
}

// RefusedError is a dial the policy refused. The address was not contacted.
type RefusedError struct {
	Address netip.Addr
	// Rule names why: "link-local", "metadata", "loopback", "private", ...
	Rule string
	// Grantable is true when an administrator can allow it (--allow-private-dials).
	Grantable bool
}

func (e *RefusedError) Error() string {
	if e.Grantable {
		return fmt.Sprintf("certpilot does not dial %s for a tenant: a %s address, not granted by the administrator (--allow-private-dials)",
			e.Address, e.Rule)
	}
	return fmt.Sprintf("certpilot never dials %s for a tenant: a %s address", e.Address, e.Rule)
}

// IsRefused reports whether err (or an error it wraps) is a dial the policy refused.
func IsRefused(err error) bool {
	var refused *RefusedError
	return errors.As(err, &refused)
}

type rangeRule struct {
	prefix netip.Prefix
	rule   string
}

// never are the ranges no grant opens.
var never = []rangeRule{
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "metadata"},     // AWS IMDS over IPv6
	{netip.MustParsePrefix("100.100.100.200/32"), "metadata"},    // Alibaba Cloud
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},          // "this network"; 0.0.0.0 reaches the local host
	{netip.MustParsePrefix("::/128"), "unspecified"},             //
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},          //
	{netip.MustParsePrefix("ff00::/8"), "multicast"},             //
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},   //
	{netip.MustParsePrefix("192.0.0.0/24"), "special-purpose"},   // IETF protocol assignments (Oracle's metadata is 192.0.0.192)
	{netip.MustParsePrefix("64:ff9b:1::/48"), "special-purpose"}, // local-use NAT64
}

// restricted are the ranges only a grant opens.
var restricted = []rangeRule{
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("fc00::/7"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64"}, // reaches any IPv4 address, internal ones included
	{netip.MustParsePrefix("2002::/16"), "6to4"},     // embeds an IPv4 address
}

// Check returns nil when addr may be dialled under p, or a *RefusedError naming the rule.
func (p Policy) Check(addr netip.Addr) error {
	if !addr.IsValid() {
		return &RefusedError{Address: addr, Rule: "invalid"}
	}
	addr = addr.Unmap().WithZone("")
	for _, r := range never {
		if r.prefix.Contains(addr) {
			return &RefusedError{Address: addr, Rule: r.rule}
		}
	}
	for _, r := range restricted {
		if !r.prefix.Contains(addr) {
			continue
		}
		for _, allowed := range p.Allow {
			if allowed.Contains(addr) {
				return nil
			}
		}
		return &RefusedError{Address: addr, Rule: r.rule, Grantable: true}
	}
	return nil
}

// Control is a net.Dialer Control hook: it refuses the connection before it is made when the
// address it resolved to is not allowed.
func (p Policy) Control(network, address string, _ syscall.RawConn) error {
	addrPort, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("certpilot refuses to dial %q (%s): not an IP address and port", address, network)
	}
	return p.Check(addrPort.Addr())
}

// Dialer returns a net.Dialer like base whose connections obey p.
func (p Policy) Dialer(base net.Dialer) *net.Dialer {
	base.Control = p.Control
	base.ControlContext = nil
	return &base
}

// ParseCIDRs parses a comma-separated list of CIDR prefixes or single addresses
// ("127.0.0.0/8,10.1.2.3"), as --allow-private-dials takes them.
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			addr, err := netip.ParseAddr(item)
			if err != nil {
				return nil, fmt.Errorf("%q is neither a CIDR prefix nor an IP address", item)
			}
			prefixes = append(prefixes, netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
			continue
		}
		prefix, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR prefix: %v", item, err)
		}
		if prefix.Addr().Is4In6() {
			prefix = netip.PrefixFrom(prefix.Addr().Unmap(), prefix.Bits()-96)
		}
		prefixes = append(prefixes, prefix.Masked())
	}
	return prefixes, nil
}

// String lists the granted prefixes, comma-separated, as ParseCIDRs reads them.
func (p Policy) String() string {
	parts := make([]string, len(p.Allow))
	for i, prefix := range p.Allow {
		parts[i] = prefix.String()
	}
	return strings.Join(parts, ",")
}

type contextKey struct{}

// WithPolicy returns ctx carrying p: the dials a function makes with DialerFrom(ctx) obey it.
// The certificate flow attaches the policy of a namespaced Issuer this way, so self-checks and
// nameserver queries made for its Certificates obey it too.
func WithPolicy(ctx context.Context, p Policy) context.Context {
	return context.WithValue(ctx, contextKey{}, p)
}

// FromContext returns the policy ctx carries, and whether it carries one.
func FromContext(ctx context.Context) (Policy, bool) {
	p, ok := ctx.Value(contextKey{}).(Policy)
	return p, ok
}

// DialerFrom returns base, with the Control hook of the policy ctx carries when it carries one.
func DialerFrom(ctx context.Context, base net.Dialer) *net.Dialer {
	if p, ok := FromContext(ctx); ok {
		return p.Dialer(base)
	}
	return &base
}
