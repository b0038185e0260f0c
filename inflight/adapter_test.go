package inflight_test

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

func TestIsProbe(t *testing.T) {
	for ua, want := range map[string]bool{
		"kube-probe/1.31":                true,
		"kube-probe/1.31 grpc-go/1.72.0": true,
		"Go-http-client/1.1":             false,
		"grpc-go/1.72.0":                 false,
		"":                               false,
		"Mozilla/5.0 (kube-probe/1.31)":  false,
		"kube-probe":                     false,
	} {
		assert.Equal(t, want, inflight.IsProbe(ua), "User-Agent %q", ua)
	}
}

func TestTheCoordinatorsProbeHandlersAreProbers(t *testing.T) {
	ld, err := lameduck.New()
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]http.Handler{
		"readiness": ld.ReadinessHandler(),
		"liveness":  ld.LivenessHandler(),
	} {
		_, ok := h.(inflight.Prober)
		assert.True(t, ok, "the %s handler is a Prober", name)
	}
	_, ok := any(http.NotFoundHandler()).(inflight.Prober)
	assert.False(t, ok, "another handler is not")
}

func TestArrivalsCountEachExpectedConnectionOnce(t *testing.T) {
	var a inflight.Arrivals
	var during, after inflight.Arrival
	during.Expect()
	a.Arrive(&during)
	assert.True(t, during.Expected(), "nothing is counted before Begin")

	var n atomic.Int32
	assert.False(t, a.Begun())
	a.Begin(func() { n.Add(1) })
	a.Begin(func() { t.Error("a second Begin replaced the first's function") })
	assert.True(t, a.Begun())

	assert.True(t, during.Expected())
	var wg sync.WaitGroup
	for range 8 { // every request on the connection, at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.Arrive(&during)
		}()
	}
	wg.Wait()
	a.Arrive(&after) // never expected: accepted once the drain began
	a.Arrive(nil)    // a connection the adapter does not know
	assert.Equal(t, int32(1), n.Load(), "the connection accepted during the lame duck, once")
	assert.False(t, during.Expected(), "counted")
	during.Expect()
	assert.False(t, during.Expected(), "Expect does not undo the count")
}

func TestArrivalsBeginWithNilCountsNothing(t *testing.T) {
	var a inflight.Arrivals
	a.Begin(nil)
	var c inflight.Arrival
	c.Expect()
	a.Arrive(&c)
	assert.True(t, a.Begun())
	assert.False(t, c.Expected())
}

func TestIsClosed(t *testing.T) {
	ch := make(chan struct{})
	assert.False(t, inflight.IsClosed(ch))
	close(ch)
	assert.True(t, inflight.IsClosed(ch))
	assert.False(t, inflight.IsClosed(nil), "a nil channel never is")
}
