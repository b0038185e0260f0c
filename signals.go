package lameduck

import (
	"os"
	"os/signal"
	"sync"
)

// notifySignals starts delivering shutdown signals on r.signals and returns
// a function that stops it.
func (r *run) notifySignals() (stop func()) {
	o := &r.c.opts
	r.signals = make(chan os.Signal, 2)
	if len(o.signals) > 0 {
		signal.Notify(r.signals, o.signals...)
	}
	quit := make(chan struct{})
	var forwarding sync.WaitGroup
	if o.signalChSet {
		forwarding.Add(1)
		go func() {
			defer forwarding.Done()
			for {
				select {
				case sig, ok := <-o.signalCh:
					if !ok {
						return
					}
					select {
					case r.signals <- sig:
					case <-quit:
						return
					}
				case <-quit:
					return
				}
			}
		}()
	}
	return func() {
		signal.Stop(r.signals)
		close(quit)
		forwarding.Wait()
	}
}
