// Package text holds the one helper that bounds strings certpilot shows to people (status
// messages, Event notes, errors of a server): no Kubernetes or ACME imports, so every layer can
// use it.
package text

import (
	"strings"
	"unicode/utf8"
)

// Cut returns s as valid UTF-8 (invalid bytes become "?") of at most limit bytes: s itself when
// it fits, else its longest prefix of whole characters that leaves room for a closing "…" within
// limit, with the "…".
func Cut(s string, limit int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= limit {
		return s
	}
	const ellipsis = "…"
	end := max(limit-len(ellipsis), 0)
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + ellipsis
}
