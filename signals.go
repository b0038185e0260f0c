package lameduck

import (
	"log/slog"
	"os"
	"os/signal"
)

// Signals reach Run from up to three sources at once: the Coordinator's own
// signal.Notify (WithSignals), the channel of WithSignalChannel, and the
// context given to Run, which services commonly end with
// signal.NotifyContext or from a signal handler of their own. The Go
// runtime hands one delivery of a signal to every channel registered for
// it, so one SIGTERM can arrive on all three: counting them together would
// turn that single SIGTERM into a second signal and force the shutdown (the
// arrival order of the copies is up to the scheduler).
//
// So each source is counted on its own: the first signal from any source
// starts the shutdown, and only a second delivery on the same source
// forces it. One delivery adds at most one to each source, so it can never
// force; two deliveries of a signal the Coordinator listens to always
// reach its own channel twice. The end of the context counts as one
// signal, which by itself can therefore never force.

// Signal sources, indexes into signals.seen.
const (
	ownSignals = iota // the Coordinator's signal.Notify
	fedSignals        // WithSignalChannel
	numSignalSources
)

// signals receives shutdown signals from their sources during one Run.
type signals struct {
	own  chan os.Signal
	fed  <-chan os.Signal // nil if not set, or once closed
	seen [numSignalSources]int
	log  *slog.Logger
}

// notifySignals starts receiving the shutdown signals of o and returns a
// function that stops it.
func notifySignals(o *options, log *slog.Logger) (*signals, func()) {
	// Buffered so that signal.Notify, which never blocks, does not drop a
	// second delivery while Run is busy: dropping it would lose the force.
	s := &signals{own: make(chan os.Signal, 4), fed: o.signalCh, log: log}
	if len(o.signals) > 0 {
		signal.Notify(s.own, o.signals...)
	}
	return s, func() { signal.Stop(s.own) }
}

// received counts sig from source and reports whether it is a second
// delivery on that source, one that forces the shutdown. A closed fed
// channel (ok false) is no signal.
func (s *signals) received(source int, sig os.Signal, ok bool) (force bool) {
	if !ok {
		s.fed = nil
		return false
	}
	s.seen[source]++
	if s.seen[source] == 1 {
		return false
	}
	s.log.Warn("lameduck: second signal, forcing the shutdown", slog.String("signal", sig.String()))
	return true
}
