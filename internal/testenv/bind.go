package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
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

	process *Process
}

// StartBIND starts named for a test with zone (for example "certpilot.test") and
// "refused."+zone, and stops it when the test ends. It skips under -short and fails when
// named is not installed (make test-deps installs bind9).
func StartBIND(tb testing.TB, zone string) *BIND {
	tb.Helper()
	SkipIfShort(tb)
	named, err := exec.LookPath("named")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/named"); statErr != nil {
			tb.Fatalf("named is not installed: run make test-deps (it installs bind9 and bind9-dnsutils from Debian's packages)")
		}
		named = "/usr/sbin/named"
	}
	port, err := FreeUDPAndTCPPort()
	if err != nil {
		tb.Fatal(err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	b := &BIND{
		Address:       fmt.Sprintf("127.0.0.1:%d", port),
		Zone:          dns.Fqdn(zone),
		RefusedZone:   dns.Fqdn("refused." + zone),
		TSIGKeyName:   "certpilot.",
		TSIGAlgorithm: "HMACSHA256",
		TSIGSecret:    base64.StdEncoding.EncodeToString(secret),
	}
	dir := tb.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil { // named may drop privileges and must write journals
		tb.Fatal(err)
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
};
controls { };
key "%[3]s" { algorithm hmac-sha256; secret "%[4]s"; };
zone "%[5]s" { type primary; file "%[1]s/zone.db"; allow-update { key "%[3]s"; }; };
zone "%[6]s" { type primary; file "%[1]s/refused.db"; allow-update { none; }; };
`, dir, port, b.TSIGKeyName, b.TSIGSecret, b.Zone, b.RefusedZone)
	for name, content := range map[string]string{
		"named.conf": config,
		"zone.db":    zoneFile(b.Zone),
		"refused.db": zoneFile(b.RefusedZone),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o666); err != nil {
			tb.Fatal(err)
		}
	}
	b.process, err = StartProcess("named", named, []string{"-g", "-n", "1", "-c", filepath.Join(dir, "named.conf")}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		b.process.Stop(10 * time.Second)
		if tb.Failed() {
			tb.Logf("named output:\n%s", b.process.Output())
		}
	})
	err = Poll(context.Background(), 30*time.Second, func() error {
		if exited, err := b.process.Exited(); exited {
			return fmt.Errorf("named exited: %v\n%s", err, b.process.Output())
		}
		query := new(dns.Msg)
		query.SetQuestion(b.Zone, dns.TypeSOA)
		reply, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(query, b.Address)
		if err != nil {
			return err
		}
		if len(reply.Answer) == 0 {
			return fmt.Errorf("no SOA for %s yet", b.Zone)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("starting named: %v", err)
	}
	return b
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
	message := new(dns.Msg)
	message.SetUpdate(b.Zone)
	message.Insert([]dns.RR{record})
	message.SetTsig(b.TSIGKeyName, dns.HmacSHA256, 300, time.Now().Unix())
	client := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{b.TSIGKeyName: b.TSIGSecret}}
	reply, _, err := client.Exchange(message, b.Address)
	if err != nil {
		return err
	}
	if reply.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("adding %s: %s", name, dns.RcodeToString[reply.Rcode])
	}
	return nil
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
