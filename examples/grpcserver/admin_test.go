package main_test

import (
	"net/http"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestAdminListenerAnswersThroughTheDrain(t *testing.T) {
	// No delay: the drain is cut 6s - 2s of safety margin - 3s kept for
	// closing = 1s after the signal; the endless upload, which takes no
	// turn to leave, holds it until then.
	p := start(t, build(t), "-admin-addr", "127.0.0.1:0", "-drain-delay", "0s", "-grace-period", "6s")
	assert.Equal(t, http.StatusOK, p.probe(t, "/readyz"))
	endlessUpload(t, p)
	p.signal(t, syscall.SIGTERM)
	p.awaitLine(t, "lameduck: draining")
	assert.Equal(t, http.StatusServiceUnavailable, p.probe(t, "/readyz"), "the admin listener answers during the drain")
	assert.Equal(t, http.StatusOK, p.probe(t, "/livez"))
	assert.Equal(t, 1, p.wait(t), "the endless upload is cut")
}
