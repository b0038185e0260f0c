package inflight_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/await"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTrackerCountsByKind(t *testing.T) {
	var tr inflight.Tracker
	tr.Start(inflight.Request)
	tr.Start(inflight.Request)
	tr.Start(inflight.Stream)
	tr.Start(inflight.Conn)
	assert.Equal(t, inflight.Counts{Requests: 2, Streams: 1, Conns: 1}, tr.InFlight())
	tr.Move(inflight.Request, inflight.Stream)
	assert.Equal(t, inflight.Counts{Requests: 1, Streams: 2, Conns: 1}, tr.InFlight())
	tr.Done(inflight.Request)
	tr.Done(inflight.Stream)
	tr.Done(inflight.Stream)
	tr.Done(inflight.Conn)
	assert.Equal(t, inflight.Counts{}, tr.InFlight())
}

func TestTrackerDoneWithoutStartPanics(t *testing.T) {
	var tr inflight.Tracker
	tr.Start(inflight.Request)
	assert.PanicsWithValue(t, "inflight: Tracker.Done called for a stream that was not started", func() { tr.Done(inflight.Stream) })
}

func TestTrackerIdle(t *testing.T) {
	var tr inflight.Tracker
	await.Recv(t, tr.Idle(), "Idle with nothing in flight")

	tr.Start(inflight.Request)
	idle := tr.Idle()
	select {
	case <-idle:
		t.Fatal("idle with a request in flight")
	default:
	}
	tr.Done(inflight.Request)
	await.Recv(t, idle, "Idle after the last request")

	// Work that starts after that opens Idle again.
	tr.Start(inflight.Stream)
	again := tr.Idle()
	select {
	case <-again:
		t.Fatal("idle with a stream in flight")
	default:
	}
	tr.Done(inflight.Stream)
	await.Recv(t, again, "Idle once the stream is done")
	await.Recv(t, tr.Idle(), "Idle with nothing in flight")
}

func TestTrackerUnderConcurrency(t *testing.T) {
	var tr inflight.Tracker
	const workers, each = 8, 2000
	var wg sync.WaitGroup
	started := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := inflight.Kind(w % 3)
			for i := range each {
				tr.Start(k)
				if w == 0 && i == 0 {
					close(started)
				}
				tr.Done(k)
			}
		}()
	}
	await.Recv(t, started, "the first worker to start")
	tr.Idle() // the drain begins while the workers run
	await.Wait(t, &wg, "the workers")
	assert.Equal(t, inflight.Counts{}, tr.InFlight())
	await.Recv(t, tr.Idle(), "Idle once every worker finished")
}

func TestCountsString(t *testing.T) {
	assert.Equal(t, "nothing", inflight.Counts{}.String())
	assert.Equal(t, "1 request", inflight.Counts{Requests: 1}.String())
	assert.Equal(t, "2 requests, 1 stream, 3 connections, 1 worker", inflight.Counts{Requests: 2, Streams: 1, Conns: 3, Workers: 1}.String())
	assert.Equal(t, 7, inflight.Counts{Requests: 2, Streams: 1, Conns: 3, Workers: 1}.Total())
	assert.Equal(t, inflight.Counts{Requests: 3, Conns: 1}, inflight.Counts{Requests: 1}.Add(inflight.Counts{Requests: 2, Conns: 1}))
}

func BenchmarkTracker(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		var tr inflight.Tracker
		b.ReportAllocs()
		for b.Loop() {
			tr.Start(inflight.Request)
			tr.Done(inflight.Request)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var tr inflight.Tracker
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tr.Start(inflight.Request)
				tr.Done(inflight.Request)
			}
		})
	})
}
