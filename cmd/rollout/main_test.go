package main_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/lameducktest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The command, built as a user builds it, has the parts that its module
// gives package rolloutcmd: it draws pictures, runs the gRPC load, and
// serves its built-in pods. rolloutcmd's tests cover the rest of it.
func TestTheCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command and runs rollouts")
	}
	bin := lameducktest.Build(t, "github.com/lameduck/lameduck/cmd/rollout")
	rollout := func(t *testing.T, args ...string) (code int, stdout, stderr string) {
		t.Helper()
		var out, errOut bytes.Buffer
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		// Under -race the pods are race-enabled too; without this they
		// sleep a second before exiting.
		cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
		if err := cmd.Run(); err != nil {
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "the command ran, and exited with a code")
		}
		t.Logf("rollout %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out.String(), errOut.String())
		return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
	}
	// A short run, with the lag below the drain delay: no request may fail.
	short := []string{"-cycles", "1", "-c", "4", "-lag", "300ms", "-drain-delay", "600ms", "-grace", "8s",
		"-warmup", "200ms", "-probe-period", "50ms"}
	totals := regexp.MustCompile(`(?m)^requests=(\d+) failed=0$`)

	t.Run("draw", func(t *testing.T) {
		svg := filepath.Join(t.TempDir(), "rollout.svg")
		code, stdout, stderr := rollout(t, "-draw", "internal/picture/testdata/compare.json", "-report", svg)
		require.Equal(t, 0, code)
		assert.Empty(t, stdout)
		assert.Contains(t, stderr, "report: wrote "+svg+" in ")
		b, err := os.ReadFile(svg)
		require.NoError(t, err)
		assert.Contains(t, string(b), "<svg")
		for _, server := range []string{"naive", "textbook", "lameduck"} {
			assert.Contains(t, string(b), server)
		}
	})
	t.Run("grpc", func(t *testing.T) {
		// The pod is the project's examples/grpcserver, which the command
		// builds with the go command from inside the repository.
		code, stdout, _ := rollout(t, append([]string{"-load", "grpc"}, short...)...)
		require.Equal(t, 0, code)
		m := totals.FindStringSubmatch(stdout)
		require.NotNil(t, m, "the totals end the report, and nothing failed")
		n, _ := strconv.Atoi(m[1])
		assert.Positive(t, n)
	})
	t.Run("builtin pod", func(t *testing.T) {
		// -load sse runs the built-in lameduck pod: the command itself,
		// started again.
		code, stdout, _ := rollout(t, append([]string{"-load", "sse"}, short...)...)
		require.Equal(t, 0, code)
		assert.Regexp(t, totals, stdout)
	})
}
