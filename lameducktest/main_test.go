package lameducktest_test

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/internal/rollout"
)

func TestMain(m *testing.M) {
	// The tests run the engine's built-in servers as pods by re-executing
	// this test binary with rollout.PodEnv set.
	rollout.MaybeServePod()
	goleak.VerifyTestMain(m)
}

// fakeTB stands for a test's testing.TB, to observe what the helpers do
// with it. Fatalf ends the calling goroutine, as the testing package's does;
// the rest of testing.TB (TempDir, Context, Name, ...) is the real test's.
type fakeTB struct {
	testing.TB
	// deadline, if set, is what Deadline reports, as *testing.T's does
	// under go test -timeout.
	deadline time.Time
	// artifactDir, if set, is what ArtifactDir returns, as *testing.T's
	// does under go test -artifacts (Go 1.26 on).
	artifactDir string

	mu       sync.Mutex
	fatal    string
	failed   bool
	logs     []string
	cleanups []func()
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal, f.failed = fmt.Sprintf(format, args...), true
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = true
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Skipf(format string, args ...any) {
	f.Fatalf("unexpected skip: "+format, args...)
}

func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fakeTB) Logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *fakeTB) Deadline() (time.Time, bool) { return f.deadline, !f.deadline.IsZero() }

func (f *fakeTB) ArtifactDir() string {
	if f.artifactDir == "" {
		panic("fakeTB: ArtifactDir without go test -artifacts")
	}
	return f.artifactDir
}

// run calls fn with f in a goroutine of its own, as the testing package
// runs a test, waits until fn returns or calls Fatalf, then runs the
// cleanups, last registered first. It reports whether fn returned.
func (f *fakeTB) run(t *testing.T, fn func(tb testing.TB)) (returned bool) {
	t.Helper()
	done := make(chan bool, 1)
	go func() {
		ok := false
		defer func() { done <- ok }()
		fn(f)
		ok = true
	}()
	select {
	case returned = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the helper neither returned nor called Fatalf within a minute")
	}
	f.mu.Lock()
	cleanups := f.cleanups
	f.cleanups = nil
	f.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	return returned
}

func (f *fakeTB) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.logs, "\n")
}

// startedPID matches the line the engine logs when it starts a pod.
var startedPID = regexp.MustCompile(`\[rollout\] started pid (\d+) `)

// requireNoPodLeft checks that every pod the log says was started has
// exited and been waited for.
func requireNoPodLeft(t *testing.T, log string) {
	t.Helper()
	matches := startedPID.FindAllStringSubmatch(log, -1)
	require.NotEmpty(t, matches, "the log names the pods started:\n%s", log)
	for _, m := range matches {
		pid, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		p, err := os.FindProcess(pid)
		require.NoError(t, err)
		err = p.Signal(syscall.Signal(0))
		assert.True(t, errors.Is(err, os.ErrProcessDone) || errors.Is(err, syscall.ESRCH),
			"pod pid %d must be gone, but signalling it gave %v", pid, err)
	}
}
