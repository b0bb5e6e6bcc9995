package kube

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/certpilot/certpilot/internal/text"
)

// NoteLimit is the longest Event note the apiserver accepts (events.k8s.io/v1 validation: 1 KiB).
const NoteLimit = 1024

// BoundedRecorder returns a recorder that cuts every Event note to NoteLimit bytes. The
// apiserver refuses a longer note, and the Event is lost: a message that names many hosts or
// repeats a long error would then tell the user nothing at all.
func BoundedRecorder(next recorder.EventRecorder) recorder.EventRecorder {
	return boundedRecorder{next: next}
}

type boundedRecorder struct{ next recorder.EventRecorder }

func (b boundedRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	b.next.Eventf(regarding, related, eventtype, reason, action, "%s", text.Cut(fmt.Sprintf(note, args...), NoteLimit))
}

func (b boundedRecorder) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	b.next.AnnotatedEventf(regarding, related, annotations, eventtype, reason, action, "%s", text.Cut(fmt.Sprintf(note, args...), NoteLimit))
}
