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
	bin := filepath.Join(binDir, "example")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-drain-delay", "0s", "-grace-period", "10s")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string, 1000)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	defer func() {
		cmd.Process.Kill()
		timeout := time.After(waitTimeout)
		for {
			select {
			case _, ok := <-lines:
				if !ok {
					return
				}
			case <-timeout:
				t.Error("the example did not exit once killed")
				return
			}
		}
	}()
	awaitLog := func(re *regexp.Regexp) []string {
		t.Helper()
		timeout := time.After(waitTimeout)
		for {
			select {
			case line, ok := <-lines:
				require.True(t, ok, "the example exited before logging %v", re)
				if m := re.FindStringSubmatch(line); m != nil {
					return m
				}
			case <-timeout:
				t.Fatalf("the example never logged %v", re)
			}
		}
	}
	m := awaitLog(serving)
	app, admin := "http://"+m[1], "http://"+m[2]
	client := &http.Client{Timeout: waitTimeout}
	defer client.CloseIdleConnections()

	slow := make(chan int, 1)
	go func() {
		code, _ := get(t, &http.Client{Timeout: waitTimeout}, app+"/?delay=1s")
		slow <- code
	}()
	// The slow request is in flight once the metrics count it: an answer
	// to another request, on another connection, says nothing of it.
	inFlight := `lameduck_in_flight{kind="request",server="http ` + m[1] + `"} 1`
	for timeout := time.After(waitTimeout); ; {
		if _, body := get(t, client, admin+"/metrics"); slices.Contains(lameduckLines(body), inFlight) {
			break
		}
		select {
		case <-timeout:
			t.Fatal("the slow request never reached its handler")
		default:
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	awaitLog(regexp.MustCompile(`lameduck: draining`))
	code, body := get(t, client, admin+"/metrics")
	require.Equal(t, http.StatusOK, code)
	series := lameduckLines(body)
	t.Logf("scrape during the drain:\n%s", strings.Join(series, "\n"))
	assert.Contains(t, series, `lameduck_phase{phase="draining"} 1`)
	assert.Contains(t, series, inFlight)
	assert.Contains(t, series, `lameduck_ready 0`)
	assert.Contains(t, body, "go_goroutines ", "the Go collector is registered too")

	assert.Equal(t, http.StatusOK, await.Recv(t, slow, "the answer to the slow request"))
	select {
	case err := <-exited:
		assert.NoError(t, err, "a clean drain exits 0")
	case <-time.After(waitTimeout):
		t.Fatal("the example did not exit")
	}
}
