package testnet

import (
	"context"
	"sync"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// Streams is a server of long-lived work, as a websocket server is (a
// lameduck.Departer), for the tests of the exporters: each stream that
// [Streams.Open] starts joins the departures and ends at its turn to
// leave, unless it stays, to be cut by Close.
type Streams struct {
	deps    lameduck.Departures
	work    inflight.Tracker
	stopped chan struct{} // closed by Close: Serve returns
	once    sync.Once
}

// NewStreams returns a Streams with no stream open.
func NewStreams() *Streams { return &Streams{stopped: make(chan struct{})} }

func (s *Streams) String() string                   { return "streams" }
func (s *Streams) Departures() *lameduck.Departures { return &s.deps }
func (s *Streams) Listen() error                    { return nil }
func (s *Streams) LameDuck(func())                  {}
func (s *Streams) InFlight() inflight.Counts        { return s.work.InFlight() }

func (s *Streams) Serve() error {
	<-s.stopped
	return nil
}

func (s *Streams) Drain(ctx context.Context) error {
	for {
		select {
		case <-s.work.Idle():
			if s.work.InFlight().Total() == 0 {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Streams) Close() inflight.Counts {
	s.once.Do(func() { close(s.stopped) })
	return s.work.InFlight()
}

// Open starts a stream, before the shutdown, and returns its departure and
// a function that ends it, once. It ends at its turn, unless it stays.
func (s *Streams) Open(stays bool) (*lameduck.Departure, func()) {
	s.work.Start(inflight.Stream)
	var dep *lameduck.Departure
	var once sync.Once
	end := func() {
		once.Do(func() {
			dep.Done()
			s.work.Done(inflight.Stream)
		})
	}
	leave := end
	if stays {
		leave = nil
	}
	_, dep = s.deps.Join(context.Background(), leave)
	return dep, end
}
