package kube

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
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

// notes records the notes it is given, formatted.
type notes struct{ got []string }

func (n *notes) Eventf(_, _ runtime.Object, _, _, _, note string, args ...any) {
	n.got = append(n.got, fmt.Sprintf(note, args...))
}

func (n *notes) AnnotatedEventf(_, _ runtime.Object, _ map[string]string, _, _, _, note string, args ...any) {
	n.got = append(n.got, fmt.Sprintf(note, args...))
}

func TestBoundedRecorder(t *testing.T) {
	next := &notes{}
	r := BoundedRecorder(next)
	hosts := strings.Repeat("host.example.test, ", 200) // about 3.8 KiB
	r.Eventf(&corev1.Secret{}, nil, corev1.EventTypeWarning, "TooManyNames", "Sync", "names: %s", hosts)
	r.AnnotatedEventf(&corev1.Secret{}, nil, nil, corev1.EventTypeNormal, "Short", "Sync", "%d names", 3)
	if len(next.got) != 2 {
		t.Fatalf("got %d events, want 2", len(next.got))
	}
	if len(next.got[0]) > NoteLimit || !strings.HasPrefix(next.got[0], "names: host.example.test") || !strings.HasSuffix(next.got[0], "…") {
		t.Errorf("long note: %d bytes, %q…; want at most %d bytes, cut with an ellipsis", len(next.got[0]), next.got[0][:40], NoteLimit)
	}
	if next.got[1] != "3 names" {
		t.Errorf("short note = %q, want it unchanged", next.got[1])
	}
}
