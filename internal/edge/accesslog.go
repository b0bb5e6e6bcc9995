package edge

import (
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// AccessLog writes one JSON line per proxied request (terminate mode, and the HTTP listener)
// or per connection (passthrough, upgraded tunnels): time, client, SNI, host, method, path,
// status, bytes, duration and upstream.
//
// It never writes a header value: Authorization, Cookie and their kin cannot reach it. Paths
// lose their query string (where tokens are often passed) and the token of an http-01 path.
type AccessLog struct {
	w      io.Writer
	sample float64
	mu     sync.Mutex
	buffer []byte
}

// NewAccessLog returns an access log that writes to w a fraction sample (0 < sample <= 1) of
// the lines; lines with a status of 500 or more are always written.
func NewAccessLog(w io.Writer, sample float64) *AccessLog {
	return &AccessLog{w: w, sample: sample}
}

// accessEntry is one line of the access log.
type accessEntry struct {
	start    time.Time
	listener string // https, http
	mode     Mode   // terminate, passthrough; "" on the HTTP listener
	kind     string // request, upgrade, connection
	client   string // the client's address
	sni      string
	host     string
	method   string
	path     string
	protocol string
	status   int
	// bytesSent went to the client (a response body, or the upstream's bytes of a tunnel);
	// bytesReceived came from it (tunnels only).
	bytesSent, bytesReceived int64
	upstream                 string
}

const (
	accessKindRequest    = "request"
	accessKindUpgrade    = "upgrade"
	accessKindConnection = "connection"
)

// keep reports whether a line with status is written: always for 5xx, else by sampling.
func (l *AccessLog) keep(status int) bool {
	return status >= 500 || l.sample >= 1 || rand.Float64() < l.sample
}

// write writes e, if sampling keeps it, with the duration since e.start.
func (l *AccessLog) write(e *accessEntry) {
	if l == nil || !l.keep(e.status) {
		return
	}
	duration := time.Since(e.start)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buffer[:0]
	b = append(b, `{"time":"`...)
	b = e.start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendField(b, "listener", e.listener)
	b = appendField(b, "mode", string(e.mode))
	b = appendField(b, "kind", e.kind)
	b = appendField(b, "client", e.client)
	b = appendField(b, "sni", e.sni)
	b = appendField(b, "host", e.host)
	b = appendField(b, "method", e.method)
	b = appendField(b, "path", logPath(e.path))
	b = appendField(b, "protocol", e.protocol)
	if e.status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(e.status), 10)
	}
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.bytesSent, 10)
	if e.kind != accessKindRequest {
		b = append(b, `,"bytesReceived":`...)
		b = strconv.AppendInt(b, e.bytesReceived, 10)
	}
	b = append(b, `,"duration":`...)
	b = strconv.AppendFloat(b, duration.Seconds(), 'f', 6, 64)
	b = appendField(b, "upstream", e.upstream)
	b = append(b, "}\n"...)
	l.buffer = b
	_, _ = l.w.Write(b)
}

// maxLoggedPath bounds the path written, so a client cannot make lines arbitrarily long.
const maxLoggedPath = 1024

// logPath drops the query and the http-01 token, and bounds the length.
func logPath(path string) string {
	path, _, _ = strings.Cut(path, "?")
	if strings.HasPrefix(path, HTTP01PathPrefix) && len(path) > len(HTTP01PathPrefix) {
		return HTTP01PathPrefix + "REDACTED"
	}
	if len(path) > maxLoggedPath {
		return path[:maxLoggedPath] + "..."
	}
	return path
}

// appendField appends ,"key":"value" unless value is empty.
func appendField(b []byte, key, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, `":`...)
	return appendJSONString(b, value)
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
