package dns01

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fuzzValue is a dns-01 record value as ACME makes them: 43 characters of base64url.
const fuzzValue = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

// answerServer is a name server on loopback UDP that answers every query with the same bytes
// (its ID set to the query's), whatever they are.
type answerServer struct {
	conn    net.PacketConn
	mu      sync.Mutex
	answer  []byte
	queries atomic.Int64
}

func startAnswerServer(tb testing.TB) *answerServer {
	tb.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	s := &answerServer{conn: conn}
	go func() {
		buffer := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFrom(buffer)
			if err != nil {
				return
			}
			s.queries.Add(1)
			s.mu.Lock()
			answer := bytes.Clone(s.answer)
			s.mu.Unlock()
			if len(answer) >= 2 && n >= 2 {
				copy(answer[:2], buffer[:2])
			}
			_, _ = conn.WriteTo(answer, from)
		}
	}()
	return s
}

func (s *answerServer) set(answer []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = answer
	s.queries.Store(0)
}

// packedReply returns a reply to a query for name and qtype with the given sections.
func packedReply(tb testing.TB, name string, qtype uint16, rcode int, answer, authority []dns.RR) []byte {
	tb.Helper()
	query := new(dns.Msg)
	query.SetQuestion(name, qtype)
	reply := new(dns.Msg)
	reply.SetRcode(query, rcode)
	reply.Authoritative = true
	reply.Answer, reply.Ns = answer, authority
	reply.Compress = true
	packed, err := reply.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return packed
}

func mustRR(tb testing.TB, text string) dns.RR {
	tb.Helper()
	rr, err := dns.NewRR(text)
	if err != nil {
		tb.Fatal(err)
	}
	return rr
}

// inOrder reports whether the bytes of value occur in data in order: a TXT record carries its
// value as character-strings, each after its length byte, so at least that much must hold.
func inOrder(data []byte, value string) bool {
	for i := 0; i < len(value); i++ {
		at := bytes.IndexByte(data, value[i])
		if at < 0 {
			return false
		}
		data = data[at+1:]
	}
	return true
}

// FuzzDNSAnswer checks how FindZone and Visible read a name server's answers, from a server that
// may answer anything: both return at once (no waiting on an answer that came), FindZone asks
// at most once per label of the name and only ever names a zone that holds it, its errors say
// what to fix (ErrUnreachable or ErrRefused), and Visible sees the value only in an answer that
// carries it.
func FuzzDNSAnswer(f *testing.F) {
	soa := mustRR(f, "example.com. 3600 IN SOA ns1.example.com. hostmaster.example.com. 2026120101 7200 3600 1209600 60")
	name := "_acme-challenge.www.example.com."
	f.Add(name, packedReply(f, name, dns.TypeSOA, dns.RcodeSuccess, nil, []dns.RR{soa}))
	f.Add("example.com.", packedReply(f, "example.com.", dns.TypeSOA, dns.RcodeSuccess, []dns.RR{soa}, nil))
	f.Add(name, packedReply(f, name, dns.TypeSOA, dns.RcodeNameError, nil, []dns.RR{soa}))
	f.Add(name, packedReply(f, name, dns.TypeSOA, dns.RcodeRefused, nil, nil))
	f.Add(name, packedReply(f, name, dns.TypeSOA, dns.RcodeSuccess, nil, []dns.RR{mustRR(f, "org. 3600 IN SOA a.org. b.org. 1 2 3 4 5")}))
	f.Add(name, packedReply(f, name, dns.TypeTXT, dns.RcodeSuccess, []dns.RR{
		mustRR(f, name+` 60 IN TXT "`+fuzzValue[:20]+`" "`+fuzzValue[20:]+`"`),
		mustRR(f, name+` 60 IN TXT "an-older-value"`),
	}, nil))
	f.Add(name, packedReply(f, name, dns.TypeTXT, dns.RcodeSuccess, []dns.RR{mustRR(f, name+` 60 IN CNAME other.example.net.`)}, nil))
	f.Add("a.b.c.d.e.f.example.", []byte{0, 0, 0x81, 0x80})
	server := startAnswerServer(f)
	address := server.conn.LocalAddr().String()
	f.Fuzz(func(t *testing.T, fqdn string, answer []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		server.set(answer)
		started := time.Now()
		zone, err := FindZone(ctx, address, fqdn, 2*time.Second)
		if elapsed := time.Since(started); elapsed > time.Second {
			t.Fatalf("FindZone took %v against a server that answers at once", elapsed)
		}
		labels := len(dns.SplitDomainName(dns.Fqdn(fqdn)))
		if queries := server.queries.Load(); queries > int64(max(labels, 1)) {
			t.Fatalf("FindZone asked %d times for a name of %d labels", queries, labels)
		}
		switch {
		case err != nil && !errors.Is(err, ErrUnreachable) && !errors.Is(err, ErrRefused):
			t.Fatalf("FindZone error %v is neither ErrUnreachable nor ErrRefused", err)
		case err == nil && (zone == "" || !dns.IsSubDomain(zone, dns.Fqdn(fqdn))):
			t.Fatalf("FindZone(%q) = %q, which does not hold it", fqdn, zone)
		}

		server.set(answer)
		started = time.Now()
		visible, err := Visible(ctx, []string{address}, fqdn, fuzzValue)
		if elapsed := time.Since(started); elapsed > time.Second {
			t.Fatalf("Visible took %v against a server that answers at once", elapsed)
		}
		if err != nil && !errors.Is(err, ErrUnreachable) {
			t.Fatalf("Visible error %v is not ErrUnreachable", err)
		}
		if visible && (err != nil || !inOrder(answer, fuzzValue)) {
			t.Fatalf("Visible saw %q in an answer that does not carry it (error %v)", fuzzValue, err)
		}
	})
}
