package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/internal/rollout"
)

func TestMain(m *testing.M) {
	// -compare re-executes this binary as the built-in pods.
	rollout.MaybeServePod()
	goleak.VerifyTestMain(m)
}

func TestCompare(t *testing.T) {
	// Under -race the pods are race-enabled too; without this they sleep a
	// second before exiting.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"-compare", "-cycles", "1", "-c", "8",
		"-lag", "300ms", "-drain-delay", "600ms", "-grace", "8s", "-warmup", "200ms", "-probe-period", "50ms"},
		&stdout, &stderr)
	t.Logf("stderr:\n%s", stderr.String())
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	require.Len(t, lines, 3, "stdout:\n%s", stdout.String())
	re := regexp.MustCompile(`^server=(\w+) requests=(\d+) failed=(\d+)$`)
	for i, name := range rollout.Builtins {
		m := re.FindStringSubmatch(lines[i])
		require.NotNil(t, m, lines[i])
		assert.Equal(t, name, m[1])
		requests, _ := strconv.Atoi(m[2])
		failed, _ := strconv.Atoi(m[3])
		assert.Positive(t, requests)
		switch name {
		case rollout.BuiltinNaive:
			assert.Positive(t, failed, "the naive server must fail requests, or the simulation is not faithful")
		case rollout.BuiltinLameduck:
			assert.Zero(t, failed, "lameduck must fail no request")
		}
	}
	assert.Equal(t, 0, code)
}

func TestFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-compare", "-pod", "x {ADDR}"}, "drop -pod"},
		{[]string{"-compare", "-load", "grpc"}, "HTTP only"},
		{[]string{"./server", "{ADDR}"}, "quote the -pod template"},
		{[]string{"-pod", "x 'y"}, "unterminated"},
		{[]string{"-pod", "x", "-c", "2"}, "does not contain {ADDR}"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), tt.args, &stdout, &stderr)
		assert.NotZero(t, code, "%q", tt.args)
		assert.Contains(t, stderr.String(), tt.want, "%q", tt.args)
		assert.Empty(t, stdout.String())
	}
	var stdout, stderr bytes.Buffer
	assert.Zero(t, run(t.Context(), []string{"-h"}, &stdout, &stderr))
	assert.Contains(t, stderr.String(), "usage: rollout")
}
