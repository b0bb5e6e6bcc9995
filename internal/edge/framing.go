package edge

import (
	"bytes"
	"errors"
	"net/url"

	"github.com/valyala/fasthttp"
)

// HTTP/1.1 framing: the edge proxies a request only when it frames it one way, so that no
// upstream can read it differently (request smuggling). fasthttp parses leniently; the raw header
// section it sets aside is checked here against RFC 9112 before the request is routed, and
// anything ambiguous is refused with 400 (501 for a transfer coding other than chunked) and the
// connection closed. fasthttp itself refuses a bad chunk size, a chunk that does not end where
// its size says, and a missing or repeated Host; it then writes the request to the upstream
// again, with its own framing, so what reaches an upstream is what the edge understood.

// errUnsupportedTransferCoding is a Transfer-Encoding other than chunked.
var errUnsupportedTransferCoding = errors.New("transfer coding other than chunked")

// checkRequestFraming returns why header, as received, frames its request ambiguously, or nil:
// a line not ended by CRLF (bare LF or CR), obsolete line folding, a field name that is not a
// token or has white space before its colon, or that reads as a framing field with "_" for "-", a control character in a value, more than one
// Content-Length or Transfer-Encoding or Host field, a Content-Length that is not digits, both
// Content-Length and Transfer-Encoding, a Transfer-Encoding other than chunked (or on an
// HTTP/1.0 request).
func checkRequestFraming(header *fasthttp.RequestHeader) error {
	raw := header.RawHeaders()
	var lengths, encodings, hosts int
	chunked := true
	for len(raw) > 0 {
		end := bytes.IndexByte(raw, '\n')
		if end < 0 {
			return errors.New("header line not ended by CRLF")
		}
		if end == 0 || raw[end-1] != '\r' {
			return errors.New("header line ended by a bare LF")
		}
		line := raw[:end-1]
		raw = raw[end+1:]
		if len(line) == 0 {
			break // the end of the header section
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errors.New("obsolete line folding")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errors.New("header line without a field name")
		}
		name, value := line[:colon], line[colon+1:]
		for _, c := range name {
			if !isTokenChar(c) {
				return errors.New("field name is not a token")
			}
		}
		for _, c := range value {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return errors.New("control character in a field value")
			}
		}
		value = bytes.Trim(value, " \t")
		if bytes.IndexByte(name, '_') >= 0 && isFramingHeader(bytes.ReplaceAll(name, []byte("_"), []byte("-"))) {
			// Some servers read "_" as "-": Transfer_Encoding would frame the body for them.
			return errors.New("field name that reads as a framing field")
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			lengths++
			if len(value) == 0 || len(value) > 18 || bytes.IndexFunc(value, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
				return errors.New("invalid Content-Length")
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			encodings++
			chunked = chunked && bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Host")):
			hosts++
		}
	}
	switch {
	case lengths > 1:
		return errors.New("more than one Content-Length")
	case encodings > 1:
		return errors.New("more than one Transfer-Encoding")
	case hosts > 1:
		return errors.New("more than one Host")
	case lengths > 0 && encodings > 0:
		return errors.New("both Content-Length and Transfer-Encoding")
	case encodings > 0 && !chunked:
		return errUnsupportedTransferCoding
	case encodings > 0 && !header.IsHTTP11():
		return errors.New("Transfer-Encoding on an HTTP/1.0 request")
	}
	return nil
}

// normalizeRequestTarget turns an absolute-form request target (http://host/path) into the
// origin form the edge routes and forwards, when its authority is the Host header; it refuses one
// that names another host, which the edge would otherwise route by Host and an upstream by the
// target.
func normalizeRequestTarget(header *fasthttp.RequestHeader) error {
	target := header.RequestURI()
	if len(target) == 0 || target[0] == '/' || (len(target) == 1 && target[0] == '*') {
		return nil
	}
	parsed, err := url.ParseRequestURI(string(target))
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		return errors.New("invalid request target")
	}
	if !bytes.EqualFold([]byte(parsed.Host), header.Host()) {
		return errors.New("request target names another host than Host")
	}
	header.SetRequestURI(parsed.RequestURI())
	return nil
}

// isTokenChar reports whether c may appear in a token (RFC 9110, section 5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// framingHeaders are never removed because a Connection header names them: they frame the
// message or route it.
var framingHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade",
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

func isFramingHeader(name []byte) bool {
	for _, protected := range framingHeaders {
		if bytes.EqualFold(name, []byte(protected)) {
			return true
		}
	}
	return false
}
