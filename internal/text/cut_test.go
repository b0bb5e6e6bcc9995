package text

import (
	"testing"
	"unicode/utf8"
)

func TestCut(t *testing.T) {
	tests := map[string]struct {
		in   string
		n    int
		want string
	}{
		"short enough":               {in: "abc", n: 3, want: "abc"},
		"cut with an ellipsis":       {in: "abcdef", n: 5, want: "ab…"},
		"never inside a character":   {in: "aé" + "bcd", n: 5, want: "a…"},
		"a limit below the ellipsis": {in: "abcdef", n: 2, want: "…"},
		"invalid UTF-8 made valid":   {in: "a\xffb", n: 10, want: "a?b"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Cut(tc.in, tc.n)
			if got != tc.want {
				t.Errorf("Cut(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("Cut(%q, %d) = %q is not valid UTF-8", tc.in, tc.n, got)
			}
		})
	}
}
