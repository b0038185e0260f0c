package main_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
	if binDir, err = os.MkdirTemp("", "prommetrics-example"); err != nil {
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

const waitTimeout = 20 * time.Second

var serving = regexp.MustCompile(`servers="http ([0-9.:]+), admin http ([0-9.:]+)"`)

var (
	buildOnce sync.Once
	bin       string
	buildErr  error
)

// build builds the example once for all the tests.
func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		bin = filepath.Join(binDir, "example")
		out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return bin
}

// An example is a running example process, its log lines read as they come.
type example struct {
	t          *testing.T
	cmd        *exec.Cmd
	lines      chan string
	exited     chan error // receives Wait's result once the log is read to its end
	app, admin string     // base URLs, http://host:port
	log        []string   // the lines awaited so far
}

// start runs the example with args and waits until it serves.
func start(t *testing.T, args ...string) *example {
	t.Helper()
	e := &example{t: t, cmd: exec.Command(build(t), args...), lines: make(chan string, 1000), exited: make(chan error, 1)}
	stderr, err := e.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, e.cmd.Start())
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			e.lines <- sc.Text()
		}
		close(e.lines)
		e.exited <- e.cmd.Wait()
	}()
	t.Cleanup(func() {
		e.cmd.Process.Kill()
		for range e.lines {
		}
	})
	m := e.await(serving)
	e.app, e.admin = "http://"+m[1], "http://"+m[2]
	return e
}

// await returns the submatches of the first line from now on that matches re.
func (e *example) await(re *regexp.Regexp) []string {
	e.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case line, ok := <-e.lines:
			require.True(e.t, ok, "the example exited before logging %v", re)
			e.log = append(e.log, line)
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-timeout:
			e.t.Fatalf("the example never logged %v", re)
		}
	}
}

// wait waits for the example to exit, reading the rest of its log, and
// returns Wait's result.
func (e *example) wait(timeout time.Duration) error {
	e.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-e.lines:
			if !ok {
				return <-e.exited
			}
			e.log = append(e.log, line)
		case <-deadline:
			e.t.Fatalf("the example did not exit within %v", timeout)
		}
	}
}

func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// lameduckLines returns the lameduck_ series of a scrape, comments aside.
func lameduckLines(body string) []string {
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "lameduck_") {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestMetricsCanBeScrapedDuringTheDrain(t *testing.T) {
	e := start(t, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-drain-delay", "0s", "-grace-period", "10s")
	client := &http.Client{Timeout: waitTimeout}
	defer client.CloseIdleConnections()

	slow := make(chan int, 1)
	go func() {
		code, _ := get(t, &http.Client{Timeout: waitTimeout}, e.app+"/?delay=1s")
		slow <- code
	}()
	// The slow request is in flight once the metrics count it: an answer
	// to another request, on another connection, says nothing of it.
	inFlight := `lameduck_in_flight{kind="request",server="http ` + e.app[len("http://"):] + `"} 1`
	for timeout := time.After(waitTimeout); ; {
		if _, body := get(t, client, e.admin+"/metrics"); slices.Contains(lameduckLines(body), inFlight) {
			break
		}
		select {
		case <-timeout:
			t.Fatal("the slow request never reached its handler")
		default:
		}
	}
	require.NoError(t, e.cmd.Process.Signal(syscall.SIGTERM))
	e.await(regexp.MustCompile(`lameduck: draining`))
	code, body := get(t, client, e.admin+"/metrics")
	require.Equal(t, http.StatusOK, code)
	series := lameduckLines(body)
	t.Logf("scrape during the drain:\n%s", strings.Join(series, "\n"))
	assert.Contains(t, series, `lameduck_phase{phase="draining"} 1`)
	assert.Contains(t, series, inFlight)
	assert.Contains(t, series, `lameduck_ready 0`)
	assert.Contains(t, body, "go_goroutines ", "the Go collector is registered too")

	assert.Equal(t, http.StatusOK, await.Recv(t, slow, "the answer to the slow request"))
	assert.NoError(t, e.wait(waitTimeout), "a clean drain exits 0")
}

// With -final-scrape, the process stays up after the shutdown, its admin
// listener answering, until /metrics has been scraped once; then it exits 0.
func TestFinalScrapeWaitsForAScrape(t *testing.T) {
	e := start(t, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-drain-delay", "0s", "-grace-period", "30s", "-final-scrape")
	client := &http.Client{Timeout: waitTimeout}
	defer client.CloseIdleConnections()

	require.NoError(t, e.cmd.Process.Signal(syscall.SIGTERM))
	e.await(regexp.MustCompile(`msg="lameduck: stopped"`))
	// Without the option the process exits right after this line; with it,
	// the admin listener still answers, however long until a scrape comes.
	code, _ := get(t, client, e.admin+"/livez")
	assert.Equal(t, http.StatusOK, code, "the admin listener still answers after the shutdown")
	code, _ = get(t, client, e.admin+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "probes do not count as the final scrape")
	select {
	case err := <-e.exited:
		t.Fatalf("the example exited (%v) before /metrics was scraped", err)
	default:
	}

	// A connection of its own, as a scraper's first: net/http would retry
	// a request cut on a reused connection on a new one, and report that.
	scraper := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, scrapeErr := scraper.Get(e.admin + "/metrics")
	var body []byte
	if scrapeErr == nil {
		body, scrapeErr = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	e.await(regexp.MustCompile(`msg="lameduck: the final status was read"`))
	assert.NoError(t, e.wait(waitTimeout), "a clean shutdown exits 0 once scraped")

	require.NoError(t, scrapeErr, "the final scrape is answered in full")
	series := lameduckLines(string(body))
	t.Logf("the final scrape:\n%s", strings.Join(series, "\n"))
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, series, `lameduck_phase{phase="stopped"} 1`)
	assert.Contains(t, series, `lameduck_drain_delay_ended{reason="fixed"} 1`)
}
