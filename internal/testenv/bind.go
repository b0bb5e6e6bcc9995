package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BIND is a real BIND 9 name server (Debian's bind9 package) authoritative for test zones, on a
// free loopback port, accepting TSIG-signed RFC 2136 updates for Zone.
type BIND struct {
	// Address is host:port (UDP and TCP).
	Address string
	// Zone accepts updates signed with the TSIG key; RefusedZone exists but accepts none.
	Zone, RefusedZone string
	// TSIGKeyName, TSIGAlgorithm (the API's name) and TSIGSecret (base64) sign updates.
	TSIGKeyName, TSIGAlgorithm, TSIGSecret string
	// SecondaryAddress is the secondary's host:port when BINDOptions.Secondary is set.
	SecondaryAddress string
	// ResolverAddress is the recursive resolver's host:port when BINDOptions.Resolver is set.
	ResolverAddress string

	process, secondary, resolver *Process
}

// BINDOptions configure StartBINDWith.
type BINDOptions struct {
	// Zone accepts TSIG-signed updates (for example "certpilot.test"); "refused."+Zone exists
	// beside it and accepts none.
	Zone string
	// RefusedZoneRecords are zone file lines added to the refused zone (which no update can
	// change), for example a CNAME that delegates "_acme-challenge" into Zone.
	RefusedZoneRecords []string
	// Secondary starts a second authoritative server for Zone on [::1] (same port: BIND listens
	// only on interface addresses, and loopback has one of each family), which
	// transfers the zone from the primary only when told (Notify): the zone's NS records then
	// name both, and the secondary lags behind every update until then.
	Secondary bool
	// Resolver starts a recursive resolver (a third named, at ResolverAddress) that forwards the
	// test zones to the primary, as a CA's resolver would reach them: authoritative BIND does
	// not follow a CNAME into another zone, a resolver does.
	Resolver bool
}

// StartBIND starts named for a test with zone (for example "certpilot.test") and
// "refused."+zone, and stops it when the test ends. It skips under -short and fails when
// named is not installed (make test-deps installs bind9).
func StartBIND(tb testing.TB, zone string) *BIND {
	tb.Helper()
	return StartBINDWith(tb, BINDOptions{Zone: zone})
}

// StartBINDWith is StartBIND with options.
func StartBINDWith(tb testing.TB, opts BINDOptions) *BIND {
	tb.Helper()
	SkipIfShort(tb)
	named, err := exec.LookPath("named")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/named"); statErr != nil {
			tb.Fatalf("named is not installed: run make test-deps (it installs bind9 and bind9-dnsutils from Debian's packages)")
		}
		named = "/usr/sbin/named"
	}
	port, err := freeBINDPort(opts.Secondary)
	if err != nil {
		tb.Fatal(err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	b := &BIND{
		Address:       fmt.Sprintf("127.0.0.1:%d", port),
		Zone:          dns.Fqdn(opts.Zone),
		RefusedZone:   dns.Fqdn("refused." + opts.Zone),
		TSIGKeyName:   "certpilot.",
		TSIGAlgorithm: "HMACSHA256",
		TSIGSecret:    base64.StdEncoding.EncodeToString(secret),
	}
	zoneContent := zoneFile(b.Zone)
	if opts.Secondary {
		b.SecondaryAddress = fmt.Sprintf("[::1]:%d", port)
		zoneContent = strings.ReplaceAll(`$TTL 60
@	IN SOA ns1.ZONE admin.ZONE 1 3600 3600 86400 60
@	IN NS ns1.ZONE
@	IN NS ns2.ZONE
ns1	IN A 127.0.0.1
ns2	IN AAAA ::1
`, "ZONE", b.Zone)
	}
	dir := tb.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil { // named may drop privileges and must write journals
		tb.Fatal(err)
	}
	notify := ""
	if opts.Secondary {
		// The secondary learns of updates only from Notify: it lags until the test says.
		notify = "notify no;"
	}
	config := fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	allow-query { any; };
	allow-transfer { any; };
	%[7]s
};
controls { };
key "%[3]s" { algorithm hmac-sha256; secret "%[4]s"; };
zone "%[5]s" { type primary; file "%[1]s/zone.db"; allow-update { key "%[3]s"; }; };
zone "%[6]s" { type primary; file "%[1]s/refused.db"; allow-update { none; }; };
`, dir, port, b.TSIGKeyName, b.TSIGSecret, b.Zone, b.RefusedZone, notify)
	refused := zoneFile(b.RefusedZone) + strings.Join(opts.RefusedZoneRecords, "\n") + "\n"
	for name, content := range map[string]string{
		"named.conf": config,
		"zone.db":    zoneContent,
		"refused.db": refused,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o666); err != nil {
			tb.Fatal(err)
		}
	}
	b.process = startNamed(tb, named, dir, "named")
	if err := waitForSOA(b.process, b.Address, b.Zone); err != nil {
		tb.Fatalf("starting named: %v", err)
	}
	if opts.Secondary {
		secondaryDir := tb.TempDir()
		if err := os.Chmod(secondaryDir, 0o777); err != nil {
			tb.Fatal(err)
		}
		secondaryConfig := fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	listen-on { none; };
	listen-on-v6 port %[2]d { ::1; };
	recursion no;
	dnssec-validation no;
	allow-query { any; };
	allow-notify { any; };
	notify no;
};
controls { };
zone "%[3]s" { type secondary; file "%[1]s/zone.db"; primaries port %[2]d { 127.0.0.1; }; };
`, secondaryDir, port, b.Zone)
		if err := os.WriteFile(filepath.Join(secondaryDir, "named.conf"), []byte(secondaryConfig), 0o666); err != nil {
			tb.Fatal(err)
		}
		b.secondary = startNamed(tb, named, secondaryDir, "named-secondary")
		if err := waitForSOA(b.secondary, b.SecondaryAddress, b.Zone); err != nil {
			tb.Fatalf("starting the secondary named: %v", err)
		}
	}
	if opts.Resolver {
		resolverPort, err := FreeUDPAndTCPPort()
		if err != nil {
			tb.Fatal(err)
		}
		b.ResolverAddress = fmt.Sprintf("127.0.0.1:%d", resolverPort)
		resolverDir := tb.TempDir()
		if err := os.Chmod(resolverDir, 0o777); err != nil {
			tb.Fatal(err)
		}
		resolverConfig := fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion yes;
	allow-recursion { any; };
	dnssec-validation no;
	allow-query { any; };
	max-cache-ttl 1;
	max-ncache-ttl 1;
};
controls { };
zone "%[3]s" { type forward; forward only; forwarders { 127.0.0.1 port %[4]d; }; };
`, resolverDir, resolverPort, b.Zone, port)
		if err := os.WriteFile(filepath.Join(resolverDir, "named.conf"), []byte(resolverConfig), 0o666); err != nil {
			tb.Fatal(err)
		}
		b.resolver = startNamed(tb, named, resolverDir, "named-resolver")
		if err := waitForSOA(b.resolver, b.ResolverAddress, b.Zone); err != nil {
			tb.Fatalf("starting the resolver named: %v", err)
		}
	}
	return b
}

// freeBINDPort returns a port free on 127.0.0.1 (and on [::1] for a secondary).
func freeBINDPort(secondary bool) (int, error) {
	for range 50 {
		port, err := FreeUDPAndTCPPort()
		if err != nil || !secondary {
			return port, err
		}
		ok := true
		for _, network := range []string{"udp", "tcp"} {
			address := fmt.Sprintf("[::1]:%d", port)
			if network == "udp" {
				conn, err := net.ListenPacket(network, address)
				if err != nil {
					ok = false
					break
				}
				conn.Close()
				continue
			}
			listener, err := net.Listen(network, address)
			if err != nil {
				ok = false
				break
			}
			listener.Close()
		}
		if ok {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free for UDP and TCP on 127.0.0.1 and [::1]")
}

func startNamed(tb testing.TB, named, dir, name string) *Process {
	tb.Helper()
	process, err := StartProcess(name, named, []string{"-g", "-n", "1", "-c", filepath.Join(dir, "named.conf")}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		process.Stop(10 * time.Second)
		if tb.Failed() {
			tb.Logf("%s output:\n%s", name, process.Output())
		}
	})
	return process
}

func waitForSOA(process *Process, address, zone string) error {
	return Poll(context.Background(), 30*time.Second, func() error {
		if exited, err := process.Exited(); exited {
			return fmt.Errorf("named exited: %v\n%s", err, process.Output())
		}
		query := new(dns.Msg)
		query.SetQuestion(zone, dns.TypeSOA)
		reply, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(query, address)
		if err != nil {
			return err
		}
		if len(reply.Answer) == 0 {
			return fmt.Errorf("no SOA for %s at %s yet", zone, address)
		}
		return nil
	})
}

func zoneFile(zone string) string {
	return strings.ReplaceAll(`$TTL 60
@	IN SOA ns.ZONE admin.ZONE 1 60 60 600 60
@	IN NS ns.ZONE
ns	IN A 127.0.0.1
`, "ZONE", zone)
}

// AddA adds an A record (signed with the zone's TSIG key).
func (b *BIND) AddA(name, ip string) error {
	record, err := dns.NewRR(fmt.Sprintf("%s 60 IN A %s", dns.Fqdn(name), ip))
	if err != nil {
		return err
	}
	return b.update(record, true)
}

// TXT returns the TXT values at name, asked of the server directly.
func (b *BIND) TXT(name string) ([]string, error) {
	query := new(dns.Msg)
	query.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	reply, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(query, b.Address)
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

// AddTXT adds a TXT record at the primary (signed with the zone's TSIG key), as the zone's owner
// would with nsupdate.
func (b *BIND) AddTXT(name, value string) error {
	return b.update(&dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{value}}, true)
}

// RemoveTXT removes one TXT value at the primary.
func (b *BIND) RemoveTXT(name, value string) error {
	return b.update(&dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{value}}, false)
}

func (b *BIND) update(record dns.RR, add bool) error {
	message := new(dns.Msg)
	message.SetUpdate(b.Zone)
	if add {
		message.Insert([]dns.RR{record})
	} else {
		message.Remove([]dns.RR{record})
	}
	message.SetTsig(b.TSIGKeyName, dns.HmacSHA256, 300, time.Now().Unix())
	client := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{b.TSIGKeyName: b.TSIGSecret}}
	reply, _, err := client.Exchange(message, b.Address)
	if err != nil {
		return err
	}
	if reply.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("updating %s: %s", record.Header().Name, dns.RcodeToString[reply.Rcode])
	}
	return nil
}

// Serial returns the SOA serial of Zone at address (the primary's Address or SecondaryAddress):
// every update raises it.
func (b *BIND) Serial(address string) (uint32, error) {
	query := new(dns.Msg)
	query.SetQuestion(b.Zone, dns.TypeSOA)
	reply, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(query, address)
	if err != nil {
		return 0, err
	}
	for _, rr := range reply.Answer {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Serial, nil
		}
	}
	return 0, fmt.Errorf("no SOA for %s at %s", b.Zone, address)
}

// NotifySecondary sends the secondary a NOTIFY for Zone, as the primary would: it then
// transfers the zone and catches up.
func (b *BIND) NotifySecondary() error {
	if b.SecondaryAddress == "" {
		return fmt.Errorf("BIND was started without a secondary")
	}
	message := new(dns.Msg)
	message.SetNotify(b.Zone)
	reply, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(message, b.SecondaryAddress)
	if err != nil {
		return err
	}
	if reply.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("NOTIFY for %s: %s", b.Zone, dns.RcodeToString[reply.Rcode])
	}
	return nil
}
