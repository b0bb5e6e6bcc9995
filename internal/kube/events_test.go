package kube

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

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
