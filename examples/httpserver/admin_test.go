package main

import (
	"net/http"
	"regexp"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/await"
)

func TestAdminListenerAnswersThroughTheDrain(t *testing.T) {
	p := startProc(t, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-drain-delay", "0s", "-grace-period", "10s")
	m := p.await(t, regexp.MustCompile(`servers="http ([0-9.:]+), admin http ([0-9.:]+)"`))
	app, admin := "http://"+m[1], "http://"+m[2]
	client := &http.Client{Timeout: waitTimeout}
	defer client.CloseIdleConnections()
	code, _ := get(t, client, admin+"/readyz")
	assert.Equal(t, http.StatusOK, code)

	slow := make(chan int, 1)
	go func() {
		code, _ := get(t, &http.Client{Timeout: waitTimeout}, app+"/?delay=1s")
		slow <- code
	}()
	get(t, client, app+"/?delay=10ms") // the slow request is in flight once this one is answered
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.await(t, regexp.MustCompile(`lameduck: draining`))
	code, body := get(t, client, admin+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "the admin listener answers during the drain")
	assert.Equal(t, "shutting down", body)
	code, _ = get(t, client, admin+"/livez")
	assert.Equal(t, http.StatusOK, code)

	assert.Equal(t, http.StatusOK, await.Recv(t, slow, "the answer to the slow request"))
	assert.Equal(t, 0, p.exit(t))
}
