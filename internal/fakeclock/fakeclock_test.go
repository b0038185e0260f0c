package fakeclock_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/fakeclock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestTimersFireWhenTheTimeComes(t *testing.T) {
	c := fakeclock.New()
	start := c.Now()
	fired := make(chan string, 3)
	c.AfterFunc(2*time.Second, func() { fired <- "2s" })
	stop := c.AfterFunc(time.Second, func() { fired <- "stopped" })
	c.AfterFunc(0, func() { fired <- "now" })
	assert.Equal(t, "now", await.Recv(t, fired, "the timer already due"), "a timer already due fires at once")

	assert.True(t, stop())
	assert.False(t, stop(), "a stopped timer stops once")
	c.AwaitTimer(t, 2*time.Second)
	c.Advance(2*time.Second - time.Nanosecond)
	select {
	case f := <-fired:
		t.Fatalf("%s fired early", f)
	default:
	}
	c.Pass(t, 2*time.Second) // the 2s timer is still pending
	assert.Equal(t, "2s", await.Recv(t, fired, "the 2s timer"))
	assert.Equal(t, start.Add(4*time.Second-time.Nanosecond), c.Now())
}
