package acmetest

import (
	"crypto/sha256"
	"encoding/base64"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// startDNS serves, over UDP on 127.0.0.1, the TXT record "_acme-challenge.<name>" of every
// pending dns-01 challenge: the values a client would publish, as if it had.
func (ca *CA) startDNS() error {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	started := make(chan struct{})
	ca.dns = &dns.Server{PacketConn: conn, Handler: dns.HandlerFunc(ca.serveDNS), NotifyStartedFunc: func() { close(started) }}
	go func() { _ = ca.dns.ActivateAndServe() }()
	<-started
	return nil
}

func (ca *CA) serveDNS(w dns.ResponseWriter, query *dns.Msg) {
	reply := new(dns.Msg)
	reply.SetReply(query)
	reply.Authoritative = true
	for _, question := range query.Question {
		if question.Qtype != dns.TypeTXT {
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(question.Name, "."))
		domain, ok := strings.CutPrefix(name, "_acme-challenge.")
		if !ok {
			continue
		}
		for _, value := range ca.pendingDNS01(domain) {
			reply.Answer = append(reply.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 0},
				Txt: []string{value},
			})
		}
	}
	_ = w.WriteMsg(reply)
}

// pendingDNS01 returns the dns-01 TXT values of the pending authorizations for domain.
func (ca *CA) pendingDNS01(domain string) []string {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	var values []string
	for a := range ca.pending[domain] {
		if a.status != "pending" {
			delete(ca.pending[domain], a)
			continue
		}
		sum := sha256.Sum256([]byte(a.token + "." + a.account.thumbprint))
		values = append(values, base64.RawURLEncoding.EncodeToString(sum[:]))
	}
	return values
}
