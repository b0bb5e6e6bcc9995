package edge

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzRequestFraming: for any request head the edge accepts (fasthttp parses it, and
// checkRequestFraming and normalizeRequestTarget let it through), net/http's strict parser reads
// the head the edge forwards as the edge read it: the same method, target, Host and framing
// (Content-Length, or chunked). An upstream cannot frame a forwarded request another way.
func FuzzRequestFraming(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: 5\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a.example.com\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a.example.com\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a.example.com\r\nTransfer-Encoding : chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.example.com\r\nX-Folded: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\nHost: a.example.com\n\n",
		"GET http://a.example.com/p HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
		"GET http://admin.internal/ HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a.example.com\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: Content-Length, Host\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var header fasthttp.RequestHeader
		if err := header.Read(bufio.NewReader(bytes.NewReader(raw))); err != nil {
			return
		}
		if checkRequestFraming(&header) != nil || normalizeRequestTarget(&header) != nil {
			return
		}
		forwarded := header.Header()
		request, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(forwarded)))
		if err != nil {
			t.Fatalf("the edge accepted %q and forwards %q, which net/http refuses: %v", raw, forwarded, err)
		}
		if request.Method != string(header.Method()) || request.RequestURI != string(header.RequestURI()) ||
			request.Host != string(header.Host()) {
			t.Fatalf("the edge read %s %s Host %q from %q; net/http reads %s %s Host %q from %q",
				header.Method(), header.RequestURI(), header.Host(), raw, request.Method, request.RequestURI, request.Host, forwarded)
		}
		chunked := len(request.TransferEncoding) == 1 && request.TransferEncoding[0] == "chunked"
		length := header.ContentLength()
		switch {
		case length == -1: // chunked
			if !chunked {
				t.Fatalf("the edge reads %q as chunked; net/http reads %q with Transfer-Encoding %v", raw, forwarded, request.TransferEncoding)
			}
		case length >= 0 && header.Peek("Content-Length") != nil:
			if chunked || request.ContentLength != int64(length) {
				t.Fatalf("the edge reads %q with Content-Length %d; net/http reads %q with %d, chunked %t",
					raw, length, forwarded, request.ContentLength, chunked)
			}
		default: // no body
			if chunked || request.ContentLength > 0 {
				t.Fatalf("the edge reads %q without a body; net/http reads %q with Content-Length %d, chunked %t",
					raw, forwarded, request.ContentLength, chunked)
			}
		}
		if values := request.Header.Values("Content-Length"); len(values) > 1 {
			t.Fatalf("the edge forwards %q with Content-Length %s", forwarded, strings.Join(values, ", "))
		}
	})
}
