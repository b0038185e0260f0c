package rolloutcmd_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
	"github.com/lameduck/lameduck/lameducktest/rolloutcmd"
)

func TestMain(m *testing.M) {
	// -compare re-executes this binary as the built-in pods.
	rollout.MaybeServePod()
	goleak.VerifyTestMain(m)
}

// draw stands for the command's picture, which its own module draws and
// tests: an SVG that names the runs it was given.
func draw(path string, runs ...record.Run) error {
	var b strings.Builder
	b.WriteString("<svg>")
	for _, r := range runs {
		fmt.Fprintf(&b, "<text>%s</text>", r.Name)
	}
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// run runs the command with args, the gRPC load none and draw.
func run(t *testing.T, args []string, stdout, stderr *bytes.Buffer) int {
	return rolloutcmd.Run(t.Context(), args, stdout, stderr, nil, draw)
}

func TestCompare(t *testing.T) {
	// Under -race the pods are race-enabled too; without this they sleep a
	// second before exiting.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	var stdout, stderr bytes.Buffer
	dir := t.TempDir()
	picture, data := filepath.Join(dir, "rollout.svg"), filepath.Join(dir, "rollout.json")
	code := run(t, []string{"-compare", "-cycles", "1", "-c", "8",
		"-lag", "300ms", "-drain-delay", "600ms", "-grace", "8s", "-warmup", "200ms", "-probe-period", "50ms",
		"-report", picture, "-report", data},
		&stdout, &stderr)
	t.Logf("stderr:\n%s", stderr.String())
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	require.Len(t, lines, 3, "stdout:\n%s", stdout.String())
	re := regexp.MustCompile(`^server=(\w+) requests=(\d+) failed=(\d+)((?: (?:refused|reset|eof|5xx|timeout|other)=\d+)*)$`)
	for i, name := range rollout.Builtins {
		m := re.FindStringSubmatch(lines[i])
		require.NotNil(t, m, lines[i])
		assert.Equal(t, name, m[1])
		requests, _ := strconv.Atoi(m[2])
		failed, _ := strconv.Atoi(m[3])
		assert.Positive(t, requests)
		byKind := 0
		for _, kv := range strings.Fields(m[4]) {
			_, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.Atoi(v)
			byKind += n
		}
		assert.Equal(t, failed, byKind, "the kinds add up to the failures: %s", lines[i])
		assert.NotContains(t, stderr.String(), fmt.Sprintf("requests=%d failed=%d%s\n", requests, failed, m[4]),
			"the totals are printed once, on stdout")
		switch name {
		case rollout.BuiltinNaive:
			assert.Positive(t, failed, "the naive server must fail requests, or the simulation is not faithful")
		case rollout.BuiltinLameduck:
			assert.Zero(t, failed, "lameduck must fail no request")
		}
	}
	assert.Equal(t, 0, code)

	// -report draws the three runs, and records them.
	assert.Contains(t, stderr.String(), "report: wrote "+picture+" in ")
	svg, err := os.ReadFile(picture)
	require.NoError(t, err)
	assert.Contains(t, string(svg), "<svg")
	runs, err := record.ReadFile(data)
	require.NoError(t, err)
	require.Len(t, runs, 3)
	for i, r := range runs {
		assert.Equal(t, rollout.Builtins[i], r.Name)
		assert.Len(t, r.Timeline.Pods, 2, "%s: the first pod and its replacement", r.Name)
	}
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
		{[]string{"-pod", "x", "-c", "2"}, `the pod command "x" has no {ADDR}`},
		{[]string{"-pod", "x {ADDR}", "-c", "-3", "-fresh", "-1", "-addr", "0.0.0.0:80"}, "-c is -3; use 1 to 5000, or zero for 32"},
		{[]string{"-pod", "x {ADDR}", "-fresh", "-1"}, "-fresh is -1; use 0 to 5000"},
		{[]string{"-pod", "x {ADDR}", "-addr", "0.0.0.0:80"}, "-addr: "},
		{[]string{"-compare", "-report", "rollout.gif"}, "name the file .png, .svg or .json"},
		{[]string{"-draw", "rollout.json"}, "-draw needs -report"},
		{[]string{"-draw", "rollout.json", "-report", "r.png", "-compare"}, "-draw runs nothing"},
		{[]string{"-draw", "missing.json", "-report", "r.svg"}, "no such file"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(t, tt.args, &stdout, &stderr)
		assert.NotZero(t, code, "%q", tt.args)
		assert.Contains(t, stderr.String(), tt.want, "%q", tt.args)
		assert.Empty(t, stdout.String())
	}
	var stdout, stderr bytes.Buffer
	assert.Zero(t, run(t, []string{"-h"}, &stdout, &stderr))
	assert.Contains(t, stderr.String(), "usage: rollout")
}

// -draw draws recorded runs, such as lameducktest's record of a failed
// test, and runs nothing.
func TestDraw(t *testing.T) {
	dir := t.TempDir()
	recorded := filepath.Join(dir, "compare.json")
	var runs []record.Run
	for _, server := range rollout.Builtins {
		runs = append(runs, record.Run{Name: server, Requests: 1000})
	}
	require.NoError(t, record.WriteFile(recorded, runs...))
	svg := filepath.Join(dir, "rollout.svg")
	var stdout, stderr bytes.Buffer
	code := run(t, []string{"-draw", recorded, "-report", svg}, &stdout, &stderr)
	require.Equal(t, 0, code, "stderr:\n%s", stderr.String())
	assert.Empty(t, stdout.String())
	assert.Contains(t, stderr.String(), "report: wrote "+svg+" in ")
	b, err := os.ReadFile(svg)
	require.NoError(t, err)
	for _, server := range rollout.Builtins {
		assert.Contains(t, string(b), server)
	}
}

// Without the parts that Main is given, the command refuses what needs
// them, says why, and runs nothing.
func TestMissingParts(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-load", "grpc"}, "rollout: -load grpc: this build of the command has no gRPC client; github.com/lameduck/lameduck/cmd/rollout has one"},
		{[]string{"-draw", "rollout.json", "-report", "r.json"}, "rollout: -draw: this build of the command draws no picture; github.com/lameduck/lameduck/cmd/rollout does"},
		{[]string{"-compare", "-report", "r.json", "-report", "r.svg"}, "rollout: -report r.svg: this build of the command draws no picture; name the file .json, or run github.com/lameduck/lameduck/cmd/rollout"},
		// A .json report needs no picture: the command writes it itself.
		{[]string{"-pod", "x", "-report", "r.json"}, `the pod command "x" has no {ADDR}`},
	} {
		var stdout, stderr bytes.Buffer
		code := rolloutcmd.Run(t.Context(), tt.args, &stdout, &stderr, nil, nil)
		assert.Equal(t, 2, code, "%q", tt.args)
		assert.Contains(t, stderr.String(), tt.want, "%q", tt.args)
		assert.Empty(t, stdout.String())
	}
}
