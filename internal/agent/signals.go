package agent

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

var handOnIgnoredSignals sync.Once

// handOnIgnoredSignalsAsDefault: a Go program started with SIGHUP or SIGINT
// ignored (under nohup, from a background shell) keeps them ignored, and
// every program it starts inherits that: a job's Ctrl+C would do nothing.
// The agent takes them with a handler that drops them instead, so that it
// goes on ignoring them as whoever started it asked, while the programs it
// executes get the default again (exec resets handled signals, not
// ignored ones).
func handOnIgnoredSignalsAsDefault() {
	handOnIgnoredSignals.Do(func() {
		var sigs []os.Signal
		for _, s := range []os.Signal{syscall.SIGHUP, syscall.SIGINT} {
			if signal.Ignored(s) {
				sigs = append(sigs, s)
			}
		}
		if len(sigs) == 0 {
			return
		}
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, sigs...)
		go func() {
			for range ch {
			}
		}()
	})
}
