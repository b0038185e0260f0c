package main_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitTimeout = 30 * time.Second

// The collector's release: every collector module at one release, as they
// are tested together (go.opentelemetry.io/collector v0.165.0 goes with its
// v1.71.0 modules).
const collectorGoMod = `module otelcol

go 1.26.0

require (
	go.opentelemetry.io/collector/component v1.71.0
	go.opentelemetry.io/collector/confmap v1.71.0
	go.opentelemetry.io/collector/confmap/provider/fileprovider v1.71.0
	go.opentelemetry.io/collector/exporter v1.71.0
	go.opentelemetry.io/collector/exporter/debugexporter v0.165.0
	go.opentelemetry.io/collector/exporter/otlphttpexporter v0.165.0
	go.opentelemetry.io/collector/otelcol v0.165.0
	go.opentelemetry.io/collector/receiver v1.71.0
	go.opentelemetry.io/collector/receiver/otlpreceiver v0.165.0
	go.opentelemetry.io/collector/service v0.165.0
)
`

// collectorBinary builds the collector of testdata/otelcol in a module of
// its own in the user's cache directory, once per source: its many
// dependencies never reach a go.mod of the repository.
func collectorBinary(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("testdata/otelcol/main.go")
	require.NoError(t, err)
	sum := sha256.Sum256(append(src, collectorGoMod...))
	cache, err := os.UserCacheDir()
	require.NoError(t, err)
	dir := filepath.Join(cache, "lameduck", "otelcol-"+hex.EncodeToString(sum[:6]))
	bin := filepath.Join(dir, "otelcol")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), src, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(collectorGoMod), 0o644))
	start := time.Now()
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-o", bin + ".tmp", "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %v in %s: %s", args, dir, out)
	}
	require.NoError(t, os.Rename(bin+".tmp", bin))
	t.Logf("built the collector in %s, in %v", dir, time.Since(start).Round(time.Second))
	return bin
}

// sink receives what the collector's OTLP/HTTP exporter sends it, as
// OTLP's JSON encoding.
type sink struct {
	mu      sync.Mutex
	metrics []otlpMetrics
	spans   []otlpTraces
	got     chan struct{} // receives after each request
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	switch r.URL.Path {
	case "/v1/metrics":
		var m otlpMetrics
		err = json.Unmarshal(body, &m)
		s.metrics = append(s.metrics, m)
	case "/v1/traces":
		var tr otlpTraces
		err = json.Unmarshal(body, &tr)
		s.spans = append(s.spans, tr)
	}
	s.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, "{}")
	select {
	case s.got <- struct{}{}:
	default:
	}
}

// OTLP's JSON encoding, the fields the test reads.
type (
	otlpMetrics struct {
		ResourceMetrics []struct {
			ScopeMetrics []struct {
				Metrics []struct {
					Name  string
					Unit  string
					Gauge *struct{ DataPoints []otlpPoint }
					Sum   *struct{ DataPoints []otlpPoint }
				}
			}
		}
	}
	otlpPoint struct {
		Attributes []otlpAttr
		AsInt      *string // int64 as a JSON string
		AsDouble   *float64
	}
	otlpAttr struct {
		Key   string
		Value struct {
			StringValue *string
			IntValue    *string
			DoubleValue *float64
		}
	}
	otlpTraces struct {
		ResourceSpans []struct {
			ScopeSpans []struct {
				Spans []struct {
					Name              string
					StartTimeUnixNano string
					EndTimeUnixNano   string
					Attributes        []otlpAttr
					Events            []struct{ Name string }
					Status            struct{ Code int }
				}
			}
		}
	}
)

func (a otlpAttr) String() string {
	switch v := a.Value; {
	case v.StringValue != nil:
		return *v.StringValue
	case v.IntValue != nil:
		return *v.IntValue
	case v.DoubleValue != nil:
		return strconv.FormatFloat(*v.DoubleValue, 'g', -1, 64)
	}
	return ""
}

// points flattens every export received into "name{key=value,...}" →
// value, later exports over earlier ones: the last value received of
// each series.
func (s *sink) points() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]float64{}
	for _, m := range s.metrics {
		for _, rm := range m.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, mt := range sm.Metrics {
					var dps []otlpPoint
					if mt.Gauge != nil {
						dps = mt.Gauge.DataPoints
					} else if mt.Sum != nil {
						dps = mt.Sum.DataPoints
					}
					for _, p := range dps {
						key := mt.Name + "{"
						for i, a := range p.Attributes { // the SDK sorts them
							if i > 0 {
								key += ","
							}
							key += a.Key + "=" + a.String()
						}
						key += "}"
						switch {
						case p.AsInt != nil:
							v, _ := strconv.ParseFloat(*p.AsInt, 64)
							out[key] = v
						case p.AsDouble != nil:
							out[key] = *p.AsDouble
						}
					}
				}
			}
		}
	}
	return out
}

type receivedSpan struct {
	name     string
	duration time.Duration
	attrs    map[string]string
	events   []string
	status   int
}

func (s *sink) shutdownSpans() []receivedSpan {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []receivedSpan
	for _, tr := range s.spans {
		for _, rs := range tr.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					start, _ := strconv.ParseInt(sp.StartTimeUnixNano, 10, 64)
					end, _ := strconv.ParseInt(sp.EndTimeUnixNano, 10, 64)
					r := receivedSpan{name: sp.Name, duration: time.Duration(end - start), attrs: map[string]string{}, status: sp.Status.Code}
					for _, a := range sp.Attributes {
						r.attrs[a.Key] = a.String()
					}
					for _, e := range sp.Events {
						r.events = append(r.events, e.Name)
					}
					out = append(out, r)
				}
			}
		}
	}
	return out
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// collector runs the collector with an OTLP/HTTP receiver on a free port
// of 127.0.0.1 and an OTLP/HTTP exporter, JSON-encoded, to sinkURL, and
// returns the receiver's address once it accepts connections.
func collector(t *testing.T, sinkURL string) (addr string, log *bytes.Buffer) {
	t.Helper()
	bin := collectorBinary(t)
	addr = freePort(t)
	config := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http:
        endpoint: %s
exporters:
  otlphttp:
    endpoint: %s
    encoding: json
    compression: none
    retry_on_failure:
      enabled: false
    sending_queue:
      enabled: false
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [otlphttp, debug]
    traces:
      receivers: [otlp]
      exporters: [otlphttp, debug]
`, addr, sinkURL)
	file := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(file, []byte(config), 0o644))
	log = &bytes.Buffer{}
	cmd := exec.Command(bin, "--config", file)
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(waitTimeout); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, log
		}
		require.True(t, time.Now().Before(deadline), "the collector never listened on %s: %s", addr, log)
	}
}

var serving = regexp.MustCompile(`servers="http ([0-9.:]+), admin http ([0-9.:]+)"`)

// TestACollectorReceivesTheFinalValuesOfARealShutdown runs a real
// OpenTelemetry Collector, built from its Go modules, and the example as a
// process of its own that exports to it over OTLP/HTTP, and shuts the
// example down with SIGTERM, a request arriving during the drain delay: the
// collector must have received, and passed on, the stopped phase, what
// ended the delay, the last arrival, and the shutdown's span. The example
// exports metrics every minute and spans in batches, so that only the
// flush before Run returns can carry them.
func TestACollectorReceivesTheFinalValuesOfARealShutdown(t *testing.T) {
	if os.Getenv("LAMEDUCK_OTELCOL") != "1" {
		t.Skip("needs an OpenTelemetry Collector built from its Go modules (about 100 modules from the module proxy, about a minute to build the first time); run with LAMEDUCK_OTELCOL=1")
	}
	s := &sink{got: make(chan struct{}, 1)}
	srv := httptest.NewServer(s)
	defer srv.Close()
	addr, collectorLog := collector(t, srv.URL)

	bin := filepath.Join(t.TempDir(), "example")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	const delay = 2 * time.Second
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-drain-delay", delay.String(), "-grace-period", "10s")
	cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+addr, "OTEL_SERVICE_NAME=lameduck-example")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var log []string
	awaitLine := func(re *regexp.Regexp) []string {
		t.Helper()
		timeout := time.After(waitTimeout)
		for {
			select {
			case l, ok := <-lines:
				require.True(t, ok, "the example exited before logging %v:\n%s", re, log)
				log = append(log, l)
				if m := re.FindStringSubmatch(l); m != nil {
					return m
				}
			case <-timeout:
				t.Fatalf("the example never logged %v", re)
			}
		}
	}
	app := "http://" + awaitLine(serving)[1]

	signalAt := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	awaitLine(regexp.MustCompile(`lameduck: lame duck`))
	time.Sleep(300 * time.Millisecond)
	// A new connection during the delay, as a load balancer still routing
	// here would open.
	tr := &http.Transport{}
	resp, err := (&http.Client{Transport: tr, Timeout: waitTimeout}).Get(app + "/")
	require.NoError(t, err)
	resp.Body.Close()
	tr.CloseIdleConnections()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for range lines {
	}
	require.NoError(t, cmd.Wait(), "a clean drain exits 0")
	exitedAfter := time.Since(signalAt)

	// The collector passes on what it received at once (no batching):
	// give it a moment after the exit, but no flush is left to make.
	var final map[string]float64
	var spans []receivedSpan
	for timeout := time.After(waitTimeout); ; {
		final, spans = s.points(), s.shutdownSpans()
		if final["lameduck.phase.current{lameduck.phase.name=stopped}"] == 1 && len(spans) > 0 {
			break
		}
		select {
		case <-s.got:
		case <-timeout:
			t.Fatalf("the collector never passed on the final values; it received %v and spans %v; its log:\n%s", final, spans, collectorLog)
		}
	}
	t.Logf("exited %v after SIGTERM; the collector passed on:", exitedAfter.Round(time.Millisecond))
	for _, k := range sortedKeys(final) {
		t.Logf("  %s %v", k, final[k])
	}
	t.Logf("span %s (%v): events %v, attributes %v", spans[0].name, spans[0].duration.Round(time.Millisecond), spans[0].events, spans[0].attrs)

	assert.Equal(t, 0.0, final["lameduck.phase.current{lameduck.phase.name=draining}"])
	assert.Equal(t, 1.0, final["lameduck.drain_delay.ended{lameduck.drain_delay.reason=fixed}"])
	assert.Equal(t, 1.0, final["lameduck.drain_delay.arrivals{}"])
	// The real clock: the delay lasts at least what was configured, and
	// less than the process took to exit.
	assert.GreaterOrEqual(t, final["lameduck.drain_delay.duration{}"], delay.Seconds())
	assert.Less(t, final["lameduck.drain_delay.duration{}"], exitedAfter.Seconds())
	var lastArrival float64
	for k, v := range final {
		if regexp.MustCompile(`^lameduck\.drain_delay\.last_arrival\{lameduck\.server\.name=http 127\.0\.0\.1:\d+\}$`).MatchString(k) {
			lastArrival = v
		}
	}
	assert.Greater(t, lastArrival, 0.3, "the last arrival, 0.3 s or more after the signal")
	assert.Less(t, lastArrival, delay.Seconds())
	assert.Equal(t, 0.0, final["lameduck.cut{lameduck.work.kind=request}"])

	require.Len(t, spans, 1)
	sp := spans[0]
	assert.Equal(t, "lameduck.shutdown", sp.name)
	assert.Equal(t, []string{"lame duck", "draining", "stopping", "stopped"}, sp.events)
	assert.Equal(t, "fixed", sp.attrs["lameduck.drain_delay.reason"])
	assert.Equal(t, "1", sp.attrs["lameduck.drain_delay.arrivals"])
	assert.Equal(t, "0", sp.attrs["lameduck.cut.requests"])
	assert.GreaterOrEqual(t, sp.duration, delay, "the shutdown lasts at least the delay")
	assert.Less(t, sp.duration, exitedAfter)
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// With no collector to export to, the example still exits 0, at once, and
// says why its final values were not exported. (A collector that accepts
// and never answers holds the flush until the shutdown's deadline, and no
// longer: TestAFlushThatHangsCannotHoldRunPastTheDeadline, in otellameduck.)
func TestWithoutACollectorTheExampleStillExitsAtOnce(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "example")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	const grace = 3 * time.Second
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-drain-delay", "0s", "-grace-period", grace.String())
	cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+freePort(t)) // nothing listens there
	var log bytes.Buffer
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if serving.MatchString(sc.Text()) {
			break
		}
	}
	signalAt := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	rest, _ := io.ReadAll(stderr)
	log.Write(rest)
	require.NoError(t, cmd.Wait(), "exit 0: an export that fails is no failed shutdown; log:\n%s", &log)
	took := time.Since(signalAt)
	t.Logf("exited %v after SIGTERM", took.Round(time.Millisecond))
	assert.Less(t, took, grace)
	assert.Contains(t, log.String(), "otellameduck: flushing the *metric.MeterProvider before Run returns: failed to upload metrics")
	assert.Contains(t, log.String(), "connection refused")
}
