package kube

import "github.com/go-logr/logr"

// MaxVerbosity is the most verbose V level certpilot's binaries ever write, whatever
// --zap-log-level asks. client-go logs through the same logger (contextual logging): at V(6) each
// request's URL, status and latency, at V(7) its headers, and from V(8) on the bodies of requests
// and responses, which for Secrets hold private keys, account keys and TSIG secrets. Nothing of
// certpilot's own logs above V(4).
const MaxVerbosity = 6

// CapVerbosity returns logger with every V level above maxLevel disabled.
func CapVerbosity(logger logr.Logger, maxLevel int) logr.Logger {
	sink := logger.GetSink()
	if sink == nil {
		return logger
	}
	if withDepth, ok := sink.(logr.CallDepthLogSink); ok {
		sink = withDepth.WithCallDepth(1) // this wrapper is one more frame to skip
	}
	return logr.New(cappedSink{LogSink: sink, maxLevel: maxLevel})
}

// cappedSink is a LogSink that drops Info lines above maxLevel.
type cappedSink struct {
	logr.LogSink
	maxLevel int
}

// Init does nothing: the wrapped sink was initialised by its own logger, and its call depth
// was adjusted for this wrapper in CapVerbosity.
func (s cappedSink) Init(logr.RuntimeInfo) {}

func (s cappedSink) Enabled(level int) bool {
	return level <= s.maxLevel && s.LogSink.Enabled(level)
}

func (s cappedSink) Info(level int, msg string, keysAndValues ...any) {
	if level <= s.maxLevel {
		s.LogSink.Info(level, msg, keysAndValues...)
	}
}

func (s cappedSink) WithValues(keysAndValues ...any) logr.LogSink {
	return cappedSink{LogSink: s.LogSink.WithValues(keysAndValues...), maxLevel: s.maxLevel}
}

func (s cappedSink) WithName(name string) logr.LogSink {
	return cappedSink{LogSink: s.LogSink.WithName(name), maxLevel: s.maxLevel}
}
