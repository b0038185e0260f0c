package main

import (
	"testing"

	"github.com/lameduck/lameduck/grpcserver/grpcload"
	"github.com/lameduck/lameduck/lameducktest"
)

func TestRollingUpdate(t *testing.T) {
	bin := lameducktest.Build(t, ".")
	res := lameducktest.Rollout(t, lameducktest.Config{
		Command:  []string{bin, "-addr", "{ADDR}", "-probe-addr", "{PROBE_ADDR}", "-drain-delay", "2s"},
		Protocol: lameducktest.GRPC,
		Load:     grpcload.Load(),
	})
	if res.Failed > 0 {
		t.Errorf("%d of %d calls failed:\n%v", res.Failed, res.Requests, res)
	}
}
