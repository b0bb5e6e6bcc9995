package dns01

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// lookupTimeout bounds one query.
const lookupTimeout = 10 * time.Second

// maxCNAMEHops bounds a CNAME chain (loops and long chains are configuration errors).
const maxCNAMEHops = 8

// ErrCNAMELoop: a CNAME chain does not end.
var ErrCNAMELoop = errors.New("the CNAME chain does not end")

// SystemResolvers returns the nameservers of /etc/resolv.conf as host:port, the servers the
// system resolver asks.
func SystemResolvers() ([]string, error) {
	config, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("reading the system resolver's configuration: %w", err)
	}
	servers := make([]string, 0, len(config.Servers))
	for _, server := range config.Servers {
		servers = append(servers, net.JoinHostPort(server, config.Port))
	}
	if len(servers) == 0 {
		return nil, errors.New("the system resolver's configuration names no nameserver")
	}
	return servers, nil
}

// FollowCNAME returns the name a TXT lookup of fqdn ends at: fqdn itself, or the target of the
// CNAME chain that starts there, asked of the first resolver that answers.
func FollowCNAME(ctx context.Context, resolvers []string, fqdn string) (string, error) {
	name := dns.Fqdn(fqdn)
	for hop := 0; hop <= maxCNAMEHops; hop++ {
		reply, err := exchange(ctx, resolvers, name, dns.TypeCNAME)
		if err != nil {
			return "", err
		}
		target := ""
		for _, rr := range reply.Answer {
			if cname, ok := rr.(*dns.CNAME); ok && strings.EqualFold(cname.Hdr.Name, name) {
				target = cname.Target
			}
		}
		if target == "" {
			return name, nil
		}
		name = dns.Fqdn(target)
	}
	return "", fmt.Errorf("%w after %d hops from %s", ErrCNAMELoop, maxCNAMEHops, fqdn)
}

// AuthoritativeNameservers returns host:port of every authoritative nameserver of the zone that
// holds fqdn: the zone is found by its SOA, its NS records and their addresses asked of
// resolvers (an NS host outside the zones the resolvers answer for is resolved by the system
// resolver). Each server is given the port of the resolver that named it: 53 for real zones, or
// the test servers' own port.
func AuthoritativeNameservers(ctx context.Context, resolvers []string, fqdn string) ([]string, error) {
	var lastErr error
	for _, resolver := range resolvers {
		servers, err := authoritativeAt(ctx, resolver, fqdn)
		if err == nil {
			return servers, nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = errors.New("no resolver to ask")
	}
	return nil, lastErr
}

func authoritativeAt(ctx context.Context, resolver, fqdn string) ([]string, error) {
	_, port, err := net.SplitHostPort(resolver)
	if err != nil {
		return nil, fmt.Errorf("resolver %q: %w", resolver, err)
	}
	zone, err := FindZone(ctx, resolver, fqdn, lookupTimeout)
	if err != nil {
		return nil, err
	}
	reply, err := exchange(ctx, []string{resolver}, zone, dns.TypeNS)
	if err != nil {
		return nil, err
	}
	glue := map[string][]string{}
	for _, rr := range reply.Extra {
		switch rr := rr.(type) {
		case *dns.A:
			glue[strings.ToLower(rr.Hdr.Name)] = append(glue[strings.ToLower(rr.Hdr.Name)], rr.A.String())
		case *dns.AAAA:
			glue[strings.ToLower(rr.Hdr.Name)] = append(glue[strings.ToLower(rr.Hdr.Name)], rr.AAAA.String())
		}
	}
	var servers []string
	for _, rr := range reply.Answer {
		ns, ok := rr.(*dns.NS)
		if !ok {
			continue
		}
		addresses := glue[strings.ToLower(ns.Ns)]
		if len(addresses) == 0 {
			if addresses, err = resolveHost(ctx, resolver, ns.Ns); err != nil {
				return nil, fmt.Errorf("resolving nameserver %s of zone %s: %w", ns.Ns, zone, err)
			}
		}
		for _, address := range addresses {
			if server := net.JoinHostPort(address, port); !slices.Contains(servers, server) {
				servers = append(servers, server)
			}
		}
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("%s returned no NS records for zone %s", resolver, zone)
	}
	slices.Sort(servers)
	return servers, nil
}

// resolveHost returns the A (and AAAA) addresses of host at resolver, or from the system
// resolver when resolver has none.
func resolveHost(ctx context.Context, resolver, host string) ([]string, error) {
	var addresses []string
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		reply, err := exchange(ctx, []string{resolver}, host, qtype)
		if err != nil {
			continue
		}
		for _, rr := range reply.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				addresses = append(addresses, rr.A.String())
			case *dns.AAAA:
				addresses = append(addresses, rr.AAAA.String())
			}
		}
	}
	if len(addresses) > 0 {
		return addresses, nil
	}
	return net.DefaultResolver.LookupHost(ctx, strings.TrimSuffix(host, "."))
}

// TXT returns the TXT values at fqdn (each value's strings joined) as nameserver answers them,
// following a CNAME in the answer.
func TXT(ctx context.Context, nameserver, fqdn string) ([]string, error) {
	reply, err := exchange(ctx, []string{nameserver}, fqdn, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var values []string
	for _, rr := range reply.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			values = append(values, strings.Join(txt.Txt, ""))
		}
	}
	return values, nil
}

// MissingAt returns the nameservers that do not return value among the TXT records at fqdn.
func MissingAt(ctx context.Context, nameservers []string, fqdn, value string) ([]string, error) {
	var missing []string
	for _, nameserver := range nameservers {
		values, err := TXT(ctx, nameserver, fqdn)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(values, value) {
			missing = append(missing, nameserver)
		}
	}
	return missing, nil
}

// exchange asks the first of servers that answers, over UDP and again over TCP when the
// answer was truncated.
func exchange(ctx context.Context, servers []string, name string, qtype uint16) (*dns.Msg, error) {
	var lastErr error
	for _, server := range servers {
		query := new(dns.Msg)
		query.SetQuestion(dns.Fqdn(name), qtype)
		query.RecursionDesired = true
		reply, _, err := (&dns.Client{Timeout: lookupTimeout}).ExchangeContext(ctx, query, server)
		if err == nil && reply.Truncated {
			reply, _, err = (&dns.Client{Net: "tcp", Timeout: lookupTimeout}).ExchangeContext(ctx, query, server)
		}
		if err == nil {
			return reply, nil
		}
		lastErr = fmt.Errorf("%w: asking %s for %s %s: %v", ErrUnreachable, server, name, dns.TypeToString[qtype], err)
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("%w: no nameserver to ask for %s", ErrUnreachable, name)
	}
	return nil, lastErr
}
