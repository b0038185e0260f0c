package lameduck_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/await"
)

func TestTrackerCountsByKind(t *testing.T) {
	var tr lameduck.Tracker
	tr.Start(lameduck.Request)
	tr.Start(lameduck.Request)
	tr.Start(lameduck.Stream)
	tr.Start(lameduck.Conn)
	assert.Equal(t, lameduck.Counts{Requests: 2, Streams: 1, Conns: 1}, tr.InFlight())
	tr.Move(lameduck.Request, lameduck.Stream)
	assert.Equal(t, lameduck.Counts{Requests: 1, Streams: 2, Conns: 1}, tr.InFlight())
	tr.Done(lameduck.Request)
	tr.Done(lameduck.Stream)
	tr.Done(lameduck.Stream)
	tr.Done(lameduck.Conn)
	assert.Equal(t, lameduck.Counts{}, tr.InFlight())
}

func TestTrackerDoneWithoutStartPanics(t *testing.T) {
	var tr lameduck.Tracker
	tr.Start(lameduck.Request)
	assert.PanicsWithValue(t, "lameduck: Tracker.Done called for a stream that was not started", func() { tr.Done(lameduck.Stream) })
}

func TestTrackerIdle(t *testing.T) {
	var tr lameduck.Tracker
	tr.Start(lameduck.Request)
	idle := tr.Idle()
	tr.Done(lameduck.Request)
	select {
	case <-idle:
		t.Fatal("idle before the drain began")
	default:
	}

	tr.Start(lameduck.Request)
	tr.Drain()
	select {
	case <-idle:
		t.Fatal("idle with a request in flight")
	default:
	}
	tr.Done(lameduck.Request)
	select {
	case <-idle:
	case <-time.After(waitTimeout):
		t.Fatal("not idle after the last request")
	}

	// Work that starts after the drain began opens Idle again.
	tr.Start(lameduck.Stream)
	again := tr.Idle()
	select {
	case <-again:
		t.Fatal("idle with a stream in flight")
	default:
	}
	tr.Done(lameduck.Stream)
	await.Recv(t, again, "Idle once the stream is done")
	await.Recv(t, tr.Idle(), "Idle with nothing in flight")
}

func TestTrackerUnderConcurrency(t *testing.T) {
	var tr lameduck.Tracker
	const workers, each = 8, 2000
	var wg sync.WaitGroup
	started := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := lameduck.Kind(w % 3)
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
	tr.Drain()
	await.Wait(t, &wg, "the workers")
	assert.Equal(t, lameduck.Counts{}, tr.InFlight())
	select {
	case <-tr.Idle():
	case <-time.After(waitTimeout):
		t.Fatal("not idle once every worker finished")
	}
}

func TestCountsString(t *testing.T) {
	assert.Equal(t, "nothing", lameduck.Counts{}.String())
	assert.Equal(t, "1 request", lameduck.Counts{Requests: 1}.String())
	assert.Equal(t, "2 requests, 1 stream, 3 connections, 1 worker", lameduck.Counts{Requests: 2, Streams: 1, Conns: 3, Workers: 1}.String())
	assert.Equal(t, 7, lameduck.Counts{Requests: 2, Streams: 1, Conns: 3, Workers: 1}.Total())
	assert.Equal(t, lameduck.Counts{Requests: 3, Conns: 1}, lameduck.Counts{Requests: 1}.Add(lameduck.Counts{Requests: 2, Conns: 1}))
}

func BenchmarkTracker(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		var tr lameduck.Tracker
		b.ReportAllocs()
		for b.Loop() {
			tr.Start(lameduck.Request)
			tr.Done(lameduck.Request)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var tr lameduck.Tracker
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tr.Start(lameduck.Request)
				tr.Done(lameduck.Request)
			}
		})
	})
}
