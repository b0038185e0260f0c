package grpcload_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/grpcserver/grpcload"
	"github.com/lameduck/lameduck/lameducktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The load runs through lameducktest's public API: long-lived clients and
// fresh ones (a ClientConn per call) both get through a rolling update of a
// server that drains with lameduck, and fail nothing.
func TestRollingUpdate(t *testing.T) {
	bin := lameducktest.Build(t, "./testdata/server")
	res := lameducktest.Rollout(t, lameducktest.Config{
		Command:  []string{bin, "-addr", "{ADDR}", "-probe-addr", "{PROBE_ADDR}", "-drain-delay", "1s"},
		Protocol: lameducktest.GRPC,
		Load:     grpcload.Load(),
		Conns:    4,
		Fresh:    2,
		Lag:      300 * time.Millisecond,
	})
	assert.Positive(t, res.Requests)
	assert.Zero(t, res.Failed, "%v", res)
}
