package solver

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testZone is the zone the in-process servers are authoritative for.
const testZone = "example.test."

// testTSIGKey and testTSIGSecret are the TSIG key the servers accept updates signed with.
const (
	testTSIGKey    = "certpilot-test."
	testTSIGSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg=="
)

// zoneServer is an authoritative DNS server for testZone in the test process, on a loopback
// address (UDP and TCP on one port): it answers SOA, NS (with glue), A, CNAME and TXT queries
// from its records and applies RFC 2136 updates signed with testTSIGKey. A real exchange over
// loopback in milliseconds, so the solvers' DNS behaviour is tested under -short without BIND.
type zoneServer struct {
	address string

	mu      sync.Mutex
	records []dns.RR
	updates int
}

// startZoneServers starts one zoneServer per host (127.0.0.1, 127.0.0.2, ...) on one port, as
// the zone's nameservers ns1, ns2, ... (a resolver gives every nameserver its own port, so
// they share it). Updates reach whichever server they are sent to, like a primary whose
// secondaries have not transferred the zone yet.
func startZoneServers(t *testing.T, hosts ...string) []*zoneServer {
	t.Helper()
	var base []dns.RR
	base = append(base, mustRR(t, testZone+" 60 IN SOA ns1."+testZone+" hostmaster."+testZone+" 1 60 60 600 60"))
	for i, host := range hosts {
		ns := fmt.Sprintf("ns%d.%s", i+1, testZone)
		base = append(base, mustRR(t, testZone+" 60 IN NS "+ns), mustRR(t, ns+" 60 IN A "+host))
	}
	for attempt := 0; attempt < 20; attempt++ {
		servers, err := listenZoneServers(t, hosts, base)
		if err == nil {
			return servers
		}
		if attempt == 19 {
			t.Fatalf("starting the test DNS servers: %v", err)
		}
	}
	return nil
}

// listenZoneServers binds every host on one port chosen by the first bind, or fails when
// another process holds that port on some host (the caller tries another).
func listenZoneServers(t *testing.T, hosts []string, base []dns.RR) ([]*zoneServer, error) {
	var closers []func()
	fail := func(err error) ([]*zoneServer, error) {
		for _, c := range closers {
			c()
		}
		return nil, err
	}
	port := "0"
	var servers []*zoneServer
	for _, host := range hosts {
		packetConn, err := net.ListenPacket("udp", net.JoinHostPort(host, port))
		if err != nil {
			return fail(err)
		}
		closers = append(closers, func() { packetConn.Close() })
		_, port, _ = net.SplitHostPort(packetConn.LocalAddr().String())
		listener, err := net.Listen("tcp", net.JoinHostPort(host, port))
		if err != nil {
			return fail(err)
		}
		closers = append(closers, func() { listener.Close() })
		s := &zoneServer{address: net.JoinHostPort(host, port), records: slices.Clone(base)}
		servers = append(servers, s)
		secrets := map[string]string{testTSIGKey: testTSIGSecret}
		for _, server := range []*dns.Server{
			{PacketConn: packetConn, Handler: dns.HandlerFunc(s.serve), TsigSecret: secrets},
			{Listener: listener, Handler: dns.HandlerFunc(s.serve), TsigSecret: secrets},
		} {
			started := make(chan struct{})
			server.NotifyStartedFunc = func() { close(started) }
			server.MsgAcceptFunc = acceptUpdates
			go func() { _ = server.ActivateAndServe() }()
			<-started
			t.Cleanup(func() { _ = server.Shutdown() })
		}
	}
	return servers, nil
}

// acceptUpdates is the default accept function that also lets RFC 2136 updates through.
func acceptUpdates(header dns.Header) dns.MsgAcceptAction {
	if opcode := int(header.Bits>>11) & 0xF; opcode == dns.OpcodeUpdate {
		return dns.MsgAccept
	}
	return dns.DefaultMsgAcceptFunc(header)
}

func mustRR(t *testing.T, text string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(text)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

func (s *zoneServer) serve(w dns.ResponseWriter, query *dns.Msg) {
	reply := new(dns.Msg)
	reply.SetReply(query)
	reply.Authoritative = true
	if query.Opcode == dns.OpcodeUpdate {
		s.update(w, query, reply)
		return
	}
	question := query.Question[0]
	if !dns.IsSubDomain(testZone, question.Name) {
		reply.Rcode = dns.RcodeRefused
		_ = w.WriteMsg(reply)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range s.records {
		if strings.EqualFold(rr.Header().Name, question.Name) && rr.Header().Rrtype == question.Qtype {
			reply.Answer = append(reply.Answer, dns.Copy(rr))
		}
	}
	for _, rr := range reply.Answer {
		ns, ok := rr.(*dns.NS)
		if !ok {
			continue
		}
		for _, glue := range s.records {
			if a, ok := glue.(*dns.A); ok && strings.EqualFold(a.Hdr.Name, ns.Ns) {
				reply.Extra = append(reply.Extra, dns.Copy(a))
			}
		}
	}
	if len(reply.Answer) == 0 {
		reply.Ns = append(reply.Ns, dns.Copy(s.records[0])) // the SOA names the zone
	}
	_ = w.WriteMsg(reply)
}

// update applies a signed RFC 2136 update: records of class INET are added, of class NONE
// removed. An unsigned or wrongly signed one is answered NOTAUTH.
func (s *zoneServer) update(w dns.ResponseWriter, query *dns.Msg, reply *dns.Msg) {
	if query.IsTsig() == nil || w.TsigStatus() != nil {
		reply.Rcode = dns.RcodeNotAuth
		_ = w.WriteMsg(reply)
		return
	}
	if !strings.EqualFold(query.Question[0].Name, testZone) {
		reply.Rcode = dns.RcodeNotZone
	} else {
		s.mu.Lock()
		for _, rr := range query.Ns {
			switch rr.Header().Class {
			case dns.ClassINET:
				if !slices.ContainsFunc(s.records, func(r dns.RR) bool { return dns.IsDuplicate(r, rr) }) {
					s.records = append(s.records, dns.Copy(rr))
				}
			case dns.ClassNONE:
				remove := dns.Copy(rr)
				remove.Header().Class = dns.ClassINET
				s.records = slices.DeleteFunc(s.records, func(r dns.RR) bool { return dns.IsDuplicate(r, remove) })
			}
		}
		s.updates++
		s.mu.Unlock()
	}
	reply.SetTsig(testTSIGKey, dns.HmacSHA256, 300, time.Now().Unix())
	_ = w.WriteMsg(reply)
}

// add puts a record into the zone as its owner would (a zone file line).
func (s *zoneServer) add(t *testing.T, text string) {
	t.Helper()
	rr := mustRR(t, text)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, rr)
}

// remove deletes every record at name.
func (s *zoneServer) remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = slices.DeleteFunc(s.records, func(rr dns.RR) bool { return strings.EqualFold(rr.Header().Name, name) })
}

// txt returns the TXT values at name.
func (s *zoneServer) txt(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var values []string
	for _, rr := range s.records {
		if txt, ok := rr.(*dns.TXT); ok && strings.EqualFold(txt.Hdr.Name, name) {
			values = append(values, strings.Join(txt.Txt, ""))
		}
	}
	return values
}

// updateCount is the number of updates the server applied.
func (s *zoneServer) updateCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updates
}
