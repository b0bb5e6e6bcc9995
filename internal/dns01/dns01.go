// Package dns01 publishes and checks dns-01 TXT records: RFC 2136 dynamic updates signed with
// TSIG (through github.com/miekg/dns) and lookups that show whether a record is visible. It has
// no Kubernetes imports.
package dns01

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// TTL of the records certpilot creates: short, so a retried challenge is not hidden by caches.
const TTL = 60

// Errors callers tell apart to say what to fix.
var (
	// ErrTSIG: the server did not accept the TSIG signature (wrong key name, secret or
	// algorithm, or clocks too far apart).
	ErrTSIG = errors.New("the name server rejected the TSIG signature: check the key name, secret and algorithm")
	// ErrRefused: the server does not allow this update (no such zone, or the key may not
	// update it).
	ErrRefused = errors.New("the name server refused the update")
	// ErrUnreachable: no answer from the name server.
	ErrUnreachable = errors.New("the name server did not answer")
)

// TSIG algorithms by name, lowercase without hyphens: the API's HMACSHA256 and BIND's and
// nsupdate's hmac-sha256 are one algorithm (see tsigAlgorithm).
var algorithms = map[string]string{
	"hmacsha1":   dns.HmacSHA1,
	"hmacsha224": dns.HmacSHA224,
	"hmacsha256": dns.HmacSHA256,
	"hmacsha384": dns.HmacSHA384,
	"hmacsha512": dns.HmacSHA512,
}

// TSIGAlgorithm returns the TSIG algorithm (as a DNS name, "hmac-sha256.") of a name in the
// API's spelling (HMACSHA256) or BIND's (hmac-sha256, with or without the trailing dot); empty
// means HMACSHA256.
func TSIGAlgorithm(name string) (string, bool) {
	if name == "" {
		name = "HMACSHA256"
	}
	key := strings.ReplaceAll(strings.ToLower(strings.TrimSuffix(name, ".")), "-", "")
	algorithm, ok := algorithms[key]
	return algorithm, ok
}

// RFC2136 updates the zones of one authoritative name server.
type RFC2136 struct {
	// Nameserver is the server's host:port.
	Nameserver string
	// TSIGKeyName is the key's name as the server knows it.
	TSIGKeyName string
	// TSIGAlgorithm is one of HMACSHA1, HMACSHA224, HMACSHA256 (default), HMACSHA384, HMACSHA512,
	// or BIND's spelling of them (hmac-sha256).
	TSIGAlgorithm string
	// TSIGSecret is the base64 secret.
	TSIGSecret string
	// Timeout bounds each exchange; default 10 s.
	Timeout time.Duration
}

// Present adds value to the TXT records at fqdn (other values there stay: a wildcard and its
// apex share the name).
func (r *RFC2136) Present(ctx context.Context, fqdn, value string) error {
	return r.update(ctx, fqdn, value, true)
}

// CleanUp removes value from the TXT records at fqdn, and only it.
func (r *RFC2136) CleanUp(ctx context.Context, fqdn, value string) error {
	return r.update(ctx, fqdn, value, false)
}

func (r *RFC2136) update(ctx context.Context, fqdn, value string, add bool) error {
	algorithm, ok := TSIGAlgorithm(r.TSIGAlgorithm)
	if !ok {
		return fmt.Errorf("unknown TSIG algorithm %q", r.TSIGAlgorithm)
	}
	if _, err := base64.StdEncoding.DecodeString(r.TSIGSecret); err != nil {
		return fmt.Errorf("%w: the TSIG secret is not base64", ErrTSIG)
	}
	fqdn = dns.Fqdn(fqdn)
	zone, err := FindZone(ctx, r.Nameserver, fqdn, r.timeout())
	if err != nil {
		return err
	}
	record := &dns.TXT{
		Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: TTL},
		Txt: []string{value},
	}
	message := new(dns.Msg)
	message.SetUpdate(zone)
	if add {
		message.Insert([]dns.RR{record})
	} else {
		message.Remove([]dns.RR{record})
	}
	keyName := dns.Fqdn(r.TSIGKeyName)
	message.SetTsig(keyName, algorithm, 300, time.Now().Unix())
	client := &dns.Client{Net: "tcp", Timeout: r.timeout(), TsigSecret: map[string]string{keyName: r.TSIGSecret}}
	reply, _, err := client.ExchangeContext(ctx, message, r.Nameserver)
	if err != nil {
		if errors.Is(err, dns.ErrAuth) || errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrSecret) || errors.Is(err, dns.ErrKeyAlg) {
			return fmt.Errorf("%w (%v)", ErrTSIG, err)
		}
		return fmt.Errorf("%w: updating zone %s at %s: %v", ErrUnreachable, zone, r.Nameserver, err)
	}
	if tsig := reply.IsTsig(); tsig != nil && tsig.Error != dns.RcodeSuccess {
		return fmt.Errorf("%w (%s)", ErrTSIG, dns.RcodeToString[int(tsig.Error)])
	}
	switch reply.Rcode {
	case dns.RcodeSuccess:
		return nil
	case dns.RcodeNotAuth:
		return fmt.Errorf("%w (NOTAUTH for zone %s)", ErrTSIG, zone)
	case dns.RcodeRefused, dns.RcodeNotZone:
		return fmt.Errorf("%w: %s answered %s for zone %s", ErrRefused, r.Nameserver, dns.RcodeToString[reply.Rcode], zone)
	default:
		return fmt.Errorf("updating zone %s at %s: %s", zone, r.Nameserver, dns.RcodeToString[reply.Rcode])
	}
}

func (r *RFC2136) timeout() time.Duration {
	if r.Timeout == 0 {
		return 10 * time.Second
	}
	return r.Timeout
}

// FindZone returns the zone that holds fqdn at nameserver: the owner of the SOA record the server
// answers with (in the answer for the apex, in the authority section for names below it).
func FindZone(ctx context.Context, nameserver, fqdn string, timeout time.Duration) (string, error) {
	client := &dns.Client{Timeout: timeout}
	for name := dns.Fqdn(fqdn); ; {
		query := new(dns.Msg)
		query.SetQuestion(name, dns.TypeSOA)
		reply, _, err := client.ExchangeContext(ctx, query, nameserver)
		if err != nil {
			return "", fmt.Errorf("%w: looking up the zone of %s at %s: %v", ErrUnreachable, fqdn, nameserver, err)
		}
		for _, rr := range append(reply.Answer, reply.Ns...) {
			if soa, ok := rr.(*dns.SOA); ok && dns.IsSubDomain(soa.Hdr.Name, fqdn) {
				return soa.Hdr.Name, nil
			}
		}
		if reply.Rcode == dns.RcodeRefused {
			return "", fmt.Errorf("%w: %s serves no zone for %s", ErrRefused, nameserver, fqdn)
		}
		labels := dns.SplitDomainName(name)
		if len(labels) <= 1 {
			return "", fmt.Errorf("%w: %s serves no zone for %s", ErrRefused, nameserver, fqdn)
		}
		name = dns.Fqdn(strings.Join(labels[1:], "."))
	}
}

// Visible reports whether value is among the TXT records at fqdn, asked of each nameserver
// (all must see it), or of the system resolver when there are none.
func Visible(ctx context.Context, nameservers []string, fqdn, value string) (bool, error) {
	if len(nameservers) == 0 {
		values, err := net.DefaultResolver.LookupTXT(ctx, fqdn)
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return false, nil
		}
		return slices.Contains(values, value), err
	}
	client := &dns.Client{Timeout: 10 * time.Second}
	for _, nameserver := range nameservers {
		query := new(dns.Msg)
		query.SetQuestion(dns.Fqdn(fqdn), dns.TypeTXT)
		query.RecursionDesired = true
		reply, _, err := client.ExchangeContext(ctx, query, nameserver)
		if err != nil {
			return false, fmt.Errorf("%w: asking %s for %s: %v", ErrUnreachable, nameserver, fqdn, err)
		}
		found := false
		for _, rr := range reply.Answer {
			if txt, ok := rr.(*dns.TXT); ok && strings.Join(txt.Txt, "") == value {
				found = true
			}
		}
		if !found {
			return false, nil
		}
	}
	return true, nil
}
