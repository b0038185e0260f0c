package await

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fatalTB records what Fatalf reports, and ends its goroutine as
// testing.T's does.
type fatalTB struct {
	testing.TB
	msg string
}

func (tb *fatalTB) Helper() {}

func (tb *fatalTB) Fatalf(format string, args ...any) {
	tb.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestRecvReturnsWhatComes(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	assert.Equal(t, 7, Recv(t, ch, "seven"))
	close(ch)
	assert.Equal(t, 0, Recv(t, ch, "the end"), "a closed channel returns at once")
}

func TestWaitReturnsOnceTheGroupIsDone(t *testing.T) {
	var wg sync.WaitGroup
	wg.Add(1)
	go wg.Done()
	Wait(t, &wg, "the worker")
}

func TestAWaitThatTimesOutNamesItsEventAndTheGoroutines(t *testing.T) {
	tb := &fatalTB{TB: t}
	returned := make(chan bool, 1)
	go func() {
		defer func() { returned <- false }()
		recv(tb, make(chan struct{}), "the hook to run", time.Millisecond)
		returned <- true
	}()
	assert.False(t, Recv(t, returned, "the wait to end"), "the wait ends its goroutine as t.Fatal does")
	assert.Contains(t, tb.msg, "waited 1ms for the hook to run; the goroutines:\n")
	assert.Contains(t, tb.msg, "TestAWaitThatTimesOutNamesItsEventAndTheGoroutines", "every goroutine's stack")
}
