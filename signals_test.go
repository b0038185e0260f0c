//go:build unix

package lameduck_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/lameducktest"
)

// The ways real services hand their shutdown signal to Run; see
// internal/wiring.
var wirings = []string{"own", "notifycontext", "handler", "channel", "all"}

// buildWiring builds internal/wiring, with -race when the test has it.
func buildWiring(t *testing.T) string {
	t.Helper()
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	return lameducktest.Build(t, "./internal/wiring", flags...)
}

// wiringRun is one run of the wiring program.
type wiringRun struct {
	cmd    *exec.Cmd
	lines  chan string // stdout, line by line; closed at EOF
	stderr *bytes.Buffer
}

func startWiring(bin string, args ...string) (*wiringRun, error) {
	r := &wiringRun{cmd: exec.Command(bin, args...), lines: make(chan string, 64), stderr: new(bytes.Buffer)}
	r.cmd.Stderr = r.stderr
	// A -race binary otherwise sleeps 1 s at exit (atexit_sleep_ms).
	r.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	return r, nil
}

// await reads stdout until a line starting with prefix, and returns it and
// the lines before it.
func (r *wiringRun) await(prefix string) (string, []string, error) {
	var seen []string
	timeout := time.After(waitTimeout)
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				return "", seen, fmt.Errorf("output ended before %q; stdout %q; stderr:\n%s", prefix, seen, r.stderr)
			}
			if strings.HasPrefix(line, prefix) {
				return line, seen, nil
			}
			seen = append(seen, line)
		case <-timeout:
			_ = r.cmd.Process.Kill()
			return "", seen, fmt.Errorf("no %q within %v; stdout %q", prefix, waitTimeout, seen)
		}
	}
}

// rest reads stdout to its end and waits for the process to exit. A
// process still running waitTimeout later is killed, and that is the
// error.
func (r *wiringRun) rest() ([]string, error) {
	var lines []string
	timeout := time.After(waitTimeout)
	killed := false
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				err := r.cmd.Wait()
				if killed {
					err = fmt.Errorf("still running %v after the signal, killed: %v", waitTimeout, err)
				}
				return lines, err
			}
			lines = append(lines, line)
		case <-timeout:
			_ = r.cmd.Process.Kill()
			killed, timeout = true, nil
		}
	}
}

// phaseTook parses "phase NAME DURATION".
func phaseTook(line string) (time.Duration, error) {
	i := strings.LastIndexByte(line, ' ')
	return time.ParseDuration(line[i+1:])
}

// shutdownOnce runs the program once, sends it one SIGTERM once it serves,
// and checks that the whole sequence ran.
func shutdownOnce(bin, wiring string, delay time.Duration) error {
	r, err := startWiring(bin, "-wiring", wiring, "-delay", delay.String())
	if err != nil {
		return err
	}
	if _, _, err := r.await("phase serving"); err != nil {
		return err
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	lines, err := r.rest()
	if err != nil {
		return fmt.Errorf("exit: %v; stdout %q; stderr:\n%s", err, lines, r.stderr)
	}
	var tookLameDuck time.Duration = -1
	hook := false
	for _, line := range lines {
		if strings.HasPrefix(line, "phase draining ") {
			if tookLameDuck, err = phaseTook(line); err != nil {
				return err
			}
		}
		hook = hook || line == "hook ran"
	}
	switch {
	case strings.Contains(r.stderr.String(), "second signal"):
		return fmt.Errorf("one SIGTERM was taken for two:\n%s", r.stderr)
	case tookLameDuck < delay:
		return fmt.Errorf("the lame-duck phase took %v, less than the drain delay %v; stdout %q", tookLameDuck, delay, lines)
	case !hook:
		return fmt.Errorf("the shutdown hook did not run; stdout %q", lines)
	}
	return nil
}

func TestOneSignalRunsTheWholeSequenceHoweverItIsWired(t *testing.T) {
	bin := buildWiring(t)
	const runs = 50
	const delay = 20 * time.Millisecond
	for _, wiring := range wirings {
		t.Run(wiring, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var failures []error
			var wg sync.WaitGroup
			sem := make(chan struct{}, 2)
			for i := range runs {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					if err := shutdownOnce(bin, wiring, delay); err != nil {
						mu.Lock()
						failures = append(failures, fmt.Errorf("run %d: %w", i+1, err))
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			assert.Empty(t, failures, "%d of %d runs", len(failures), runs)
		})
	}
}

func TestASecondSignalForcesHoweverItIsWired(t *testing.T) {
	bin := buildWiring(t)
	const delay = 20 * time.Second // only the second signal can end it in time
	for _, wiring := range wirings {
		t.Run(wiring, func(t *testing.T) {
			t.Parallel()
			r, err := startWiring(bin, "-wiring", wiring, "-delay", delay.String())
			require.NoError(t, err)
			_, _, err = r.await("phase serving")
			require.NoError(t, err)
			require.NoError(t, r.cmd.Process.Signal(syscall.SIGTERM))
			_, _, err = r.await("phase lame duck")
			require.NoError(t, err)
			require.NoError(t, r.cmd.Process.Signal(os.Interrupt))
			lines, err := r.rest()
			var exit *exec.ExitError
			require.True(t, errors.As(err, &exit), "exit: %v; stdout %q; stderr:\n%s", err, lines, r.stderr)
			assert.Equal(t, 1, exit.ExitCode(), "a forced shutdown is an error")
			assert.Contains(t, r.stderr.String(), `msg="lameduck: second signal, forcing the shutdown" signal=interrupt`)
			assert.NotContains(t, lines, "hook ran", "a second signal skips the hooks")
		})
	}
}
