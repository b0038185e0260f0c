package main_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/internal/await"
)

var binDir string

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "realtime-example"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// build builds the command, once, for the tests that run it.
func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binary = filepath.Join(binDir, "realtime")
		if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binary
}

// proc is the command running as a process, on a free loopback port.
type proc struct {
	cmd      *exec.Cmd
	addr     string
	lines    chan string // its log, line by line, for awaitLine
	exited   chan struct{}
	exitedAt time.Time // when Wait returned
	err      error     // from Wait
	signaled time.Time // just before SIGTERM was sent

	mu  sync.Mutex
	log strings.Builder
}

var servingLine = regexp.MustCompile(`servers="http ([0-9.:]+)`)

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	args = append([]string{"-addr", "127.0.0.1:0"}, args...)
	p := &proc{cmd: exec.Command(build(t), args...), lines: make(chan string, 1000), exited: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		p.err = p.cmd.Wait()
		p.exitedAt = time.Now()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		await.Recv(t, p.exited, "the command to exit once killed")
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.addr, p.logText())
		}
	})
	p.addr = servingLine.FindStringSubmatch(p.awaitLine(t, "lameduck: serving"))[1]
	return p
}

// awaitLine waits for a line of the log containing s, and returns it.
func (p *proc) awaitLine(t *testing.T, s string) string {
	t.Helper()
	timeout := time.After(await.Timeout)
	for {
		select {
		case line := <-p.lines:
			if strings.Contains(line, s) {
				return line
			}
		case <-p.exited:
			t.Fatalf("the command exited before logging %q", s)
		case <-timeout:
			t.Fatalf("the command never logged %q", s)
		}
	}
}

func (p *proc) sigterm(t *testing.T) {
	t.Helper()
	p.signaled = time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	await.Recv(t, p.exited, "the command to exit")
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return exit.ExitCode()
	}
	require.NoError(t, p.err)
	return 0
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// drainDeadline returns when the drain deadline falls, at the latest,
// from the lame duck line of the log: the deadline is measured from the
// signal, which came after p.signaled.
func (p *proc) drainDeadline(t *testing.T) time.Time {
	t.Helper()
	m := regexp.MustCompile(`msg="lameduck: lame duck".* drain_deadline_in=(\S+)`).FindStringSubmatch(p.logText())
	require.NotNil(t, m, "the lame duck line gives the drain deadline")
	d, err := time.ParseDuration(m[1])
	require.NoError(t, err)
	return p.signaled.Add(d)
}

func get(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: await.Timeout}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestCommandServesAndProbes(t *testing.T) {
	p := start(t, "-admin-addr", "127.0.0.1:0", "-drain-delay", "0s", "-grace-period", "10s", "-interval", "10ms")
	admin := regexp.MustCompile(`admin http ([0-9.:]+)`).FindStringSubmatch(p.logText())
	require.NotNil(t, admin, "the serving line names the admin listener")
	base := "http://" + p.addr
	p.awaitLine(t, "lameduck: ready")
	for _, tt := range []struct {
		url, body string
		code      int
		header    []string
	}{
		{base + "/", "ok", http.StatusOK, nil},
		{base + "/readyz", "ok", http.StatusOK, nil},
		{base + "/livez", "ok", http.StatusOK, nil},
		{"http://" + admin[1] + "/readyz", "ok", http.StatusOK, nil},
		{base + "/ws?from=x", `"x" is not a message number`, http.StatusBadRequest, nil},
		{base + "/events?from=-1", `"-1" is not a message number`, http.StatusBadRequest, nil},
		{base + "/events", `"ten" is not a message number`, http.StatusBadRequest, []string{"Last-Event-ID", "ten"}},
		{base + "/nothing", "404 page not found", http.StatusNotFound, nil},
	} {
		code, body := get(t, tt.url, tt.header...)
		assert.Equal(t, tt.code, code, tt.url)
		assert.Contains(t, body, tt.body, tt.url)
	}
	p.sigterm(t)
	assert.Equal(t, 0, p.wait(t))
}

func TestCommandRejectsBadUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"-bogus"}, 2, "flag provided but not defined: -bogus"},
		{"bad duration", []string{"-interval", "often"}, 2, `invalid value "often" for flag -interval`},
		{"no interval", []string{"-interval", "0s"}, 2, "-interval is 0s"},
		{"negative init", []string{"-init-delay", "-1s"}, 2, "-init-delay is -1s"},
		{"window past the budget", []string{"-grace-period", "10s", "-departure-window", "20s"}, 2, "departure window"},
		{"arguments", []string{"serve"}, 2, "unexpected arguments"},
		{"busy port", []string{"-addr", taken.Addr().String()}, 1, "address already in use"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(build(t), tt.args...).CombinedOutput()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "%s", out)
			assert.Equal(t, tt.code, exit.ExitCode())
			assert.Contains(t, string(out), tt.want)
		})
	}
}
