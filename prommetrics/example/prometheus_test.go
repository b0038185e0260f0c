package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The measurement of TestPrometheusSeesEveryShutdown.
const (
	promEnv        = "LAMEDUCK_PROMETHEUS"
	scrapeInterval = 5 * time.Second
	promShutdowns  = 10 // with the option, and as many without
	promDrainDelay = 2 * time.Second
	promJob        = "lameduck-example"
)

const promRerun = "scripts/prometheus-install && cd prommetrics && " + promEnv + "=1 go test -v -timeout 15m -run TestPrometheusSeesEveryShutdown ./example/"

// TestPrometheusSeesEveryShutdown counts, with a real Prometheus server
// scraping the admin listener every 5 s, in how many shutdowns the final
// values reached Prometheus' storage: the last arrival, what ended the drain
// delay, the stopped phase. It runs promShutdowns shutdowns without
// -final-scrape and as many with it, alternately, each with one request
// during the drain delay, and queries the raw samples afterwards. The
// signal is sent at a different moment of the scrape cycle in each
// shutdown, spread evenly over the interval, the same moments for both.
//
// It takes about four minutes, so it runs only with LAMEDUCK_PROMETHEUS=1.
func TestPrometheusSeesEveryShutdown(t *testing.T) {
	if os.Getenv(promEnv) != "1" {
		t.Skipf("measures shutdowns with a real Prometheus server for about four minutes; run it, from the repository's root, with: %s", promRerun)
	}
	adminAddr := freeAddr(t) // the same target for every shutdown
	prom := startPrometheus(t, adminAddr)
	client := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}

	var runs []*promShutdown
	for k := range promShutdowns {
		for _, final := range []bool{false, true} {
			runs = append(runs, runShutdown(t, prom, client, adminAddr, final, time.Duration(k)*scrapeInterval/promShutdowns))
		}
	}
	// Scrapes of a target are appended one after the other: once a scrape
	// later than the last exit is stored, every earlier one is.
	last := runs[len(runs)-1].exit
	prom.awaitScrape(t, last, false)

	window := fmt.Sprintf("[%ds]", int(time.Since(runs[0].start).Seconds())+10)
	sel := func(metric, labels string) string {
		return metric + `{job="` + promJob + `"` + labels + `}` + window
	}
	now := time.Now()
	up := prom.samples(t, sel("up", ""), now)
	arrival := prom.samples(t, sel("lameduck_last_arrival_seconds", ""), now)
	ended := prom.samples(t, sel("lameduck_drain_delay_ended", ""), now)
	stopped := prom.samples(t, sel("lameduck_phase", `,phase="stopped"`), now)

	type tally struct{ arrival, ended, stopped, failed, read int }
	var without, with tally
	t.Logf("%-12s %6s %8s %7s %11s | %7s %6s %7s", "final-scrape", "offset", "scrapes", "failed", "final read", "arrival", "ended", "stopped")
	for _, r := range runs {
		in := func(s []sample) []sample { return between(s, r.start, r.exit) }
		after := func(s []sample) []sample { return between(s, r.signal, r.exit) }
		arrived := false
		for _, s := range in(arrival) {
			arrived = arrived || math.Abs(s.v-r.lastArrival.Seconds()) < 1e-6
		}
		endedSeen := len(in(ended)) > 0
		stoppedSeen := len(withValue(in(stopped), 1)) > 0
		failed := len(withValue(after(up), 0))
		c := &without
		if r.final {
			c = &with
		}
		c.arrival += b2i(arrived)
		c.ended += b2i(endedSeen)
		c.stopped += b2i(stoppedSeen)
		c.failed += b2i(failed > 0)
		c.read += b2i(r.finalRead)
		t.Logf("%-12v %6v %8d %7d %11v | %7v %6v %7v", r.final, r.offset, len(after(up)), failed, r.finalRead, arrived, endedSeen, stoppedSeen)
	}
	for _, m := range []struct {
		name string
		c    tally
	}{{"without -final-scrape", without}, {"with -final-scrape", with}} {
		t.Logf("%s: of %d shutdowns, the last arrival reached Prometheus' storage in %d, what ended the drain delay in %d, the stopped phase in %d; a scrape failed after the signal in %d; a scrape read the final status in %d",
			m.name, promShutdowns, m.c.arrival, m.c.ended, m.c.stopped, m.c.failed, m.c.read)
	}
	t.Logf("scrape interval %v, drain delay %v, one request during each delay; rerun: %s", scrapeInterval, promDrainDelay, promRerun)
	assert.Equal(t, promShutdowns, with.arrival, "with -final-scrape, every shutdown's last arrival reaches Prometheus")
	assert.Equal(t, promShutdowns, with.ended, "with -final-scrape, what ended every drain delay reaches Prometheus")
	assert.Equal(t, promShutdowns, with.stopped, "with -final-scrape, every shutdown's stopped phase reaches Prometheus")
}

// A promShutdown is one shutdown of the example, as the test saw it.
type promShutdown struct {
	final               bool
	offset              time.Duration // of the signal, after a scrape
	start, signal, exit time.Time
	lastArrival         time.Duration // as the example logged it
	finalRead           bool          // the example logged that a scrape read the final status
}

var lastArrivalLog = regexp.MustCompile(`msg="lameduck: draining".* arrivals=1 last_arrival=([^ ]+)`)

// runShutdown starts the example on adminAddr, waits until Prometheus has
// scraped it, sends SIGTERM offset after a scrape, makes one request during
// the drain delay and waits for the exit, which must be 0.
func runShutdown(t *testing.T, prom *prometheus, client *http.Client, adminAddr string, final bool, offset time.Duration) *promShutdown {
	t.Helper()
	r := &promShutdown{final: final, offset: offset, start: time.Now()}
	args := []string{"-addr", "127.0.0.1:0", "-admin-addr", adminAddr, "-drain-delay", promDrainDelay.String(), "-grace-period", "30s"}
	if final {
		args = append(args, "-final-scrape")
	}
	e := start(t, args...)
	scraped := prom.awaitScrape(t, r.start, true)
	// The moment of the signal within the scrape cycle is what is
	// measured, so it is set, not awaited: offset after a scrape.
	at := scraped.Add(offset)
	for time.Until(at) < 50*time.Millisecond {
		at = at.Add(scrapeInterval)
	}
	time.Sleep(time.Until(at))
	r.signal = time.Now()
	require.NoError(t, e.cmd.Process.Signal(syscall.SIGTERM))
	e.await(regexp.MustCompile(`msg="lameduck: lame duck"`))
	code, body := get(t, client, e.app+"/") // a new connection: an arrival
	require.Equal(t, http.StatusOK, code, body)
	require.NoError(t, e.wait(40*time.Second), "the example exits 0:\n%s", strings.Join(e.log, "\n"))
	r.exit = time.Now()
	for _, l := range e.log {
		r.finalRead = r.finalRead || strings.Contains(l, `msg="lameduck: the final status was read"`)
		if m := lastArrivalLog.FindStringSubmatch(l); m != nil {
			d, err := time.ParseDuration(m[1])
			require.NoError(t, err)
			r.lastArrival = d
		}
	}
	require.NotZero(t, r.lastArrival, "the request arrived during the drain delay:\n%s", strings.Join(e.log, "\n"))
	return r
}

// prometheus is a Prometheus server of the test's own.
type prometheus struct {
	url string
}

// startPrometheus starts /usr/bin/prometheus on a free port of 127.0.0.1,
// scraping target as promJob every scrapeInterval, its storage in a
// temporary directory, and waits until it is ready.
func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		bin = "/usr/bin/prometheus"
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s=1 needs a Prometheus server: install one with scripts/prometheus-install (apt-get install -y prometheus): %v", promEnv, err)
		}
	}
	dir := t.TempDir() // removed after the server has stopped: cleanups run last first
	config := fmt.Sprintf(`global:
  scrape_interval: %v
  scrape_timeout: 4s
scrape_configs:
  - job_name: %s
    static_configs:
      - targets: ['%s']
`, scrapeInterval, promJob, target)
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(config), 0o644))
	listen := freeAddr(t)
	var log bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus' log:\n%s", log.String())
		}
	})
	p := &prometheus{url: "http://" + listen}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := client.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited (%v):\n%s", err, log.String())
		case <-time.After(100 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "prometheus was not ready within a minute:\n%s", log.String())
	}
	client.CloseIdleConnections()
	return p
}

// freeAddr returns an address of 127.0.0.1 with a port free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// A sample is one raw sample of a series.
type sample struct {
	at time.Time
	v  float64
}

// samples returns the raw samples of every series of query, a range
// selector, evaluated at at; stale markers are not samples.
func (p *prometheus) samples(t *testing.T, query string, at time.Time) []sample {
	t.Helper()
	q := url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(p.url + "/api/v1/query?" + q.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	var r struct {
		Status, Error string
		Data          struct {
			ResultType string
			Result     []struct {
				Metric map[string]string
				Values [][2]any
			}
		}
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	require.Equal(t, "success", r.Status, "%s: %s", query, r.Error)
	require.Equal(t, "matrix", r.Data.ResultType, query)
	var out []sample
	for _, series := range r.Data.Result {
		for _, v := range series.Values {
			ts, _ := v[0].(float64)
			s, _ := v[1].(string)
			f, err := strconv.ParseFloat(s, 64)
			require.NoError(t, err, "%s: %v", query, v)
			out = append(out, sample{at: time.UnixMilli(int64(math.Round(ts * 1000))), v: f})
		}
	}
	return out
}

// awaitScrape waits until Prometheus has stored a scrape of promJob that
// began after since, a successful one if ok, and returns when it began.
func (p *prometheus) awaitScrape(t *testing.T, since time.Time, ok bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(3 * scrapeInterval)
	for {
		for _, s := range p.samples(t, `up{job="`+promJob+`"}[30s]`, time.Now()) {
			if s.at.After(since) && (!ok || s.v == 1) {
				return s.at
			}
		}
		require.True(t, time.Now().Before(deadline), "prometheus stored no scrape of %s since %v", promJob, since)
		time.Sleep(100 * time.Millisecond) // polling Prometheus' API: it tells no one when it scrapes
	}
}

func between(s []sample, from, to time.Time) []sample {
	var out []sample
	for _, x := range s {
		if !x.at.Before(from) && !x.at.After(to) {
			out = append(out, x)
		}
	}
	return out
}

func withValue(s []sample, v float64) []sample {
	var out []sample
	for _, x := range s {
		if x.v == v {
			out = append(out, x)
		}
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
