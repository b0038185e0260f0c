package lameducktest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/rollout"
)

// The zero values of Config mean the simulator's defaults, the same as the
// rollout command's, and its documentation says which.
func TestConfigDocumentsTheSimulatorsDefaults(t *testing.T) {
	rc, err := Config{Command: []string{"server", "{ADDR}"}}.engineConfig()
	require.NoError(t, err)
	assert.Equal(t, 1, rc.Cycles, "Config.Rollouts: zero means 1")
	assert.Equal(t, 32, rc.Conns, "Config.Conns: zero means 32")
	assert.Equal(t, time.Second, rc.Lag, "Config.Lag: zero means 1 s")
	assert.Equal(t, 10*time.Second, rc.Grace, "Config.Grace: zero means 10 s")
	assert.Equal(t, 10*time.Second, rc.ReadyTimeout, "Config.ReadyTimeout: zero means 10 s")
	assert.Equal(t, "/readyz", rc.ReadyPath, `Config.ReadyPath: zero means "/readyz"`)
	assert.Equal(t, rollout.LoadHTTP1, rc.Load, "Config.Protocol: zero means HTTP1")
}
