package testcluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/util/wait"
)

// BIND is a BIND 9 name server on the bridge address, port 53, where pods and Pebble reach it:
// authoritative for the root zone, whose wildcard A record answers every name with one address,
// and accepting TSIG-signed RFC 2136 updates anywhere in it, so that a dns-01 challenge of any
// name can be answered from inside the cluster.
type BIND struct {
	// Address is host:port (UDP and TCP).
	Address string
	// TSIGKeyName, TSIGAlgorithm (the API's name) and TSIGSecret (base64) sign updates.
	TSIGKeyName, TSIGAlgorithm, TSIGSecret string

	process *process
}

// Stop stops named (Down stops it too).
func (b *BIND) Stop() {
	b.process.stop(5 * time.Second)
}

// BINDAddress is where StartBIND's named listens.
var BINDAddress = net.JoinHostPort(BridgeIP, "53")

// StartBIND runs named (Debian's bind9, installed by `make test-deps`) on BINDAddress, answering
// every name without a record of its own with answerIP. Down stops it.
func (c *Cluster) StartBIND(ctx context.Context, answerIP string) (*BIND, error) {
	named, err := exec.LookPath("named")
	if err != nil {
		if named = "/usr/sbin/named"; !exists(named) {
			return nil, fmt.Errorf("named is not installed: run `make test-deps` (it installs bind9 from Debian's packages)")
		}
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	b := &BIND{Address: BINDAddress, TSIGKeyName: "certpilot.", TSIGAlgorithm: "HMACSHA256",
		TSIGSecret: base64.StdEncoding.EncodeToString(secret)}
	dir := filepath.Join(c.Dir, "bind")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "named.conf"), bindConfig(dir, b.TSIGKeyName, b.TSIGSecret)); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "root.db"), rootZone(answerIP)); err != nil {
		return nil, err
	}
	c.step("BIND on %s: every name resolves to %s, TSIG key %q", b.Address, answerIP, b.TSIGKeyName)
	b.process, err = c.start("named", named, "-g", "-n", "1", "-c", filepath.Join(dir, "named.conf"))
	if err != nil {
		return nil, err
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		if err := c.exited(b.process); err != nil {
			return false, err
		}
		query := new(dns.Msg)
		query.SetQuestion(".", dns.TypeSOA)
		reply, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(query, b.Address)
		return err == nil && len(reply.Answer) > 0, nil
	}); err != nil {
		return nil, fmt.Errorf("named did not answer on %s: %w\n%s", b.Address, err, c.logTail("named", 30))
	}
	return b, nil
}

// bindConfig is named's configuration: authoritative only, on the bridge address, the root zone
// updatable with the TSIG key.
func bindConfig(dir, keyName, secret string) string {
	return fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	listen-on port 53 { %[2]s; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	allow-query { any; };
	allow-transfer { none; };
	notify no;
};
controls { };
key "%[3]s" { algorithm hmac-sha256; secret "%[4]s"; };
zone "." { type primary; file "%[1]s/root.db"; allow-update { key "%[3]s"; }; };
`, dir, BridgeIP, keyName, secret)
}

// rootZone is the root zone: its name server on the bridge address and a wildcard A record.
func rootZone(answerIP string) string {
	return fmt.Sprintf(`$TTL 5
@	IN SOA ns.certpilot-cluster. admin.certpilot-cluster. 1 3600 3600 86400 5
@	IN NS ns.certpilot-cluster.
ns.certpilot-cluster.	IN A %s
*	IN A %s
`, BridgeIP, answerIP)
}
