package lameduck_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/fakeclock"
)

// probe serves one request to h and returns the status and body.
func probe(t *testing.T, h http.Handler, method, target string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w.Code, w.Body.String()
}

func TestReadinessFollowsTheLifecycle(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(time.Second))
	ready, live := h.ld.ReadinessHandler(), h.ld.LivenessHandler()
	s := newFakeServer("a", h.log)
	s.work.Start(inflight.Request) // keeps the drain going
	h.ld.Register(s)

	expect := func(code int, body string) {
		t.Helper()
		gotCode, gotBody := probe(t, ready, http.MethodGet, "/readyz")
		assert.Equal(t, code, gotCode)
		assert.Equal(t, body, gotBody)
		gotCode, gotBody = probe(t, live, http.MethodGet, "/livez")
		assert.Equal(t, http.StatusOK, gotCode, "liveness stays up")
		assert.Equal(t, "ok", gotBody)
	}

	expect(http.StatusServiceUnavailable, "starting")
	h.start(t, context.Background())
	expect(http.StatusServiceUnavailable, "starting")
	h.ld.MarkReady()
	await.Recv(t, h.ld.MarkedReady(), "MarkedReady to close")
	expect(http.StatusOK, "ok")

	h.signals <- syscall.SIGTERM
	h.phases.await(t, lameduck.PhaseLameDuck)
	expect(http.StatusServiceUnavailable, "shutting down")
	h.ld.MarkReady() // too late: the latch is one way
	expect(http.StatusServiceUnavailable, "shutting down")
	h.clock.AwaitTimer(t, time.Second)
	h.clock.Advance(time.Second)
	h.log.await(t, "a drain")
	expect(http.StatusServiceUnavailable, "shutting down")
	s.work.Done(inflight.Request)
	require.NoError(t, h.wait(t))
	expect(http.StatusServiceUnavailable, "shutting down")
}

func TestReadinessWhenShutdownComesBeforeReady(t *testing.T) {
	h := newHarness(t)
	h.ld.Register(newFakeServer("a", h.log))
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	require.NoError(t, h.wait(t))
	h.ld.MarkReady()
	code, body := probe(t, h.ld.ReadinessHandler(), http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "shutting down", body)
}

func TestProbesAnswerOnlyGetAndHead(t *testing.T) {
	ld, err := lameduck.New(lameduck.WithLogger(discard))
	require.NoError(t, err)
	ld.MarkReady()
	for name, h := range map[string]http.Handler{"readiness": ld.ReadinessHandler(), "liveness": ld.LivenessHandler()} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions, "BREW"} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(method, "/", nil))
			assert.Equal(t, http.StatusMethodNotAllowed, w.Code, "%s %s", name, method)
			assert.Equal(t, "GET, HEAD", w.Header().Get("Allow"))
		}
		code, _ := probe(t, h, http.MethodHead, "/")
		assert.Equal(t, http.StatusOK, code, name)
	}
}

func passing(context.Context) error { return nil }

func TestReadinessChecks(t *testing.T) {
	ld, err := lameduck.New(lameduck.WithLogger(discard))
	require.NoError(t, err)
	var dbDown atomic.Bool
	dbDown.Store(true)
	ld.AddCheck(lameduck.Check{Name: "cache", Func: passing})
	ld.AddCheck(lameduck.Check{Name: "db", Func: func(context.Context) error {
		if dbDown.Load() {
			return errors.New("dial tcp 10.0.0.7:5432: connect: connection refused; password=hunter2")
		}
		return nil
	}})
	ld.MarkReady()
	h := ld.ReadinessHandler()

	code, body := probe(t, h, http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "db", body)

	code, body = probe(t, h, http.MethodGet, "/readyz?verbose")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "[+]started ok\n[+]shutdown ok\n[+]cache ok\n[-]db failed\nreadyz check failed\n", body)
	assert.NotContains(t, body, "hunter2", "error text stays out of responses by default")

	code, body = probe(t, h, http.MethodGet, "/readyz?exclude=db")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok", body)

	code, body = probe(t, h, http.MethodGet, "/readyz?verbose&exclude=db&exclude=nope&exclude=cache")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "[+]started ok\n[+]shutdown ok\n[+]cache excluded: ok\n[+]db excluded: ok\nwarn: 1 excluded names match no check\nreadyz check passed\n", body)

	code, body = probe(t, h, http.MethodGet, "/readyz?verbose=1&exclude=shutdown")
	assert.Equal(t, http.StatusServiceUnavailable, code, "built-in checks cannot be excluded")
	assert.Contains(t, body, "warn: 1 excluded names match no check\n")

	dbDown.Store(false)
	code, body = probe(t, h, http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok", body)
}

func TestReadinessCheckDetailsAreOptIn(t *testing.T) {
	ld, err := lameduck.New(lameduck.WithLogger(discard), lameduck.WithCheckDetails())
	require.NoError(t, err)
	ld.AddCheck(lameduck.Check{Name: "db", Func: func(context.Context) error { return errors.New("connection refused\nretry later") }})
	code, body := probe(t, ld.ReadinessHandler(), http.MethodGet, "/readyz?verbose")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "[-]started failed\n[+]shutdown ok\n[-]db failed: connection refused retry later\nreadyz check failed\n", body)
}

func TestReadinessCheckTimeout(t *testing.T) {
	clock := fakeclock.New()
	ld, err := lameduck.New(lameduck.WithLogger(discard), clock.Option(), lameduck.WithCheckDetails())
	require.NoError(t, err)
	release := make(chan struct{})
	var calls atomic.Int32
	ld.AddCheck(lameduck.Check{Name: "slow", Timeout: 2 * time.Second, Func: func(ctx context.Context) error {
		calls.Add(1)
		<-release // ignores ctx, like a badly written check
		return nil
	}})
	ld.MarkReady()
	h := ld.ReadinessHandler()

	answered := make(chan string)
	go func() { _, body := probe(t, h, http.MethodGet, "/readyz?verbose"); answered <- body }()
	clock.AwaitTimer(t, 2*time.Second)
	clock.Advance(2 * time.Second)
	assert.Contains(t, await.Recv(t, answered, "the probe's answer"), "[-]slow failed: timed out after 2s")

	// While the call still hangs, probes fail at once without calling again.
	code, body := probe(t, h, http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "slow", body)
	assert.Equal(t, int32(1), calls.Load())
	close(release)
}

func TestReadinessChecksAreCoalesced(t *testing.T) {
	const probes = 50
	ld, err := lameduck.New(lameduck.WithLogger(discard))
	require.NoError(t, err)
	// The check holds its first call until every probe has reached the
	// handler, so that they all find it running.
	arrived := make(chan struct{}, probes)
	var calls, running, maxRunning atomic.Int32
	ld.AddCheck(lameduck.Check{Name: "db", Func: func(ctx context.Context) error {
		n := running.Add(1)
		defer running.Add(-1)
		for m := maxRunning.Load(); n > m && !maxRunning.CompareAndSwap(m, n); m = maxRunning.Load() {
		}
		if calls.Add(1) == 1 {
			for range probes {
				<-arrived
			}
		}
		return nil
	}})
	ld.MarkReady()
	readiness := ld.ReadinessHandler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		readiness.ServeHTTP(w, r)
	}))
	defer srv.Close()

	var wg sync.WaitGroup
	codes := make([]int, probes)
	for i := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL + "/readyz")
			if !assert.NoError(t, err) {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	await.Wait(t, &wg, "the probes")
	for _, code := range codes {
		assert.Equal(t, http.StatusOK, code)
	}
	assert.Equal(t, int32(1), maxRunning.Load(), "a check runs at most once at a time")
	assert.Less(t, calls.Load(), int32(probes/2), "concurrent probes share calls")
	srv.CloseClientConnections()
}

func TestReadinessCheckCache(t *testing.T) {
	clock := fakeclock.New()
	ld, err := lameduck.New(lameduck.WithLogger(discard), clock.Option())
	require.NoError(t, err)
	var calls atomic.Int32
	ld.AddCheck(lameduck.Check{Name: "db", Cache: time.Second, Func: func(context.Context) error { calls.Add(1); return nil }})
	ld.MarkReady()
	h := ld.ReadinessHandler()
	for range 3 {
		code, _ := probe(t, h, http.MethodGet, "/readyz")
		assert.Equal(t, http.StatusOK, code)
	}
	assert.Equal(t, int32(1), calls.Load(), "a fresh result is reused")
	clock.Advance(time.Second)
	probe(t, h, http.MethodGet, "/readyz")
	assert.Equal(t, int32(2), calls.Load(), "a stale result is not")
}

func TestReadinessCheckPanicFails(t *testing.T) {
	ld, err := lameduck.New(lameduck.WithLogger(discard))
	require.NoError(t, err)
	ld.AddCheck(lameduck.Check{Name: "db", Func: func(context.Context) error { panic("nil map") }})
	ld.MarkReady()
	code, body := probe(t, ld.ReadinessHandler(), http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "db", body)
}

func TestAddCheckRejectsMisuse(t *testing.T) {
	tests := []struct {
		name  string
		check lameduck.Check
		want  string
	}{
		{"empty name", lameduck.Check{Func: passing}, "Name is empty"},
		{"reserved", lameduck.Check{Name: "shutdown", Func: passing}, `"shutdown" is reserved`},
		{"space", lameduck.Check{Name: "my db", Func: passing}, "spaces or control characters"},
		{"newline", lameduck.Check{Name: "db\n[+]x", Func: passing}, "spaces or control characters"},
		{"nil func", lameduck.Check{Name: "db"}, "nil Func"},
		{"negative timeout", lameduck.Check{Name: "db", Func: passing, Timeout: -1}, "negative Timeout"},
		{"negative cache", lameduck.Check{Name: "db", Func: passing, Cache: -1}, "negative Cache"},
		{"duplicate", lameduck.Check{Name: "dup", Func: passing}, `a check named "dup" is already registered`},
	}
	ld, err := lameduck.New()
	require.NoError(t, err)
	ld.AddCheck(lameduck.Check{Name: "dup", Func: passing})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				p := recover()
				require.NotNil(t, p)
				msg, _ := p.(string)
				assert.True(t, strings.HasPrefix(msg, "lameduck: AddCheck: "), msg)
				assert.Contains(t, msg, tt.want)
			}()
			ld.AddCheck(tt.check)
		})
	}
}

func FuzzReadinessQuery(f *testing.F) {
	for _, seed := range []string{"", "verbose", "verbose&exclude=db", "exclude=%zz", "exclude=db&exclude=db", "verbose=&&&=", "exclude=" + strings.Repeat("a", 1000)} {
		f.Add(seed)
	}
	ld, err := lameduck.New(lameduck.WithLogger(discard))
	if err != nil {
		f.Fatal(err)
	}
	ld.AddCheck(lameduck.Check{Name: "db", Func: passing})
	ld.AddCheck(lameduck.Check{Name: "cache", Func: func(context.Context) error { return errors.New("down") }})
	ld.MarkReady()
	h := ld.ReadinessHandler()
	f.Fuzz(func(t *testing.T, query string) {
		r := httptest.NewRequest(http.MethodGet, "/readyz", nil)
		r.URL.RawQuery = query
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d for query %q", w.Code, query)
		}
		// The answer never echoes the query, so its size is bounded by the
		// checks, whatever the query.
		if w.Body.Len() > 200 {
			t.Fatalf("%d-byte answer for query %q", w.Body.Len(), query)
		}
	})
}

// discardWriter is a ResponseWriter that keeps nothing, so that benchmarks
// measure the handler alone.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

func benchmarkHandler(b *testing.B, h http.Handler, target string) {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// BenchmarkReadiness measures the probe handlers against a bare handler
// that writes the same answer, the baseline of the same run.
func BenchmarkReadiness(b *testing.B) {
	ld, err := lameduck.New(lameduck.WithLogger(discard))
	if err != nil {
		b.Fatal(err)
	}
	ld.MarkReady()
	contentType, ok := []string{"text/plain; charset=utf-8"}, []byte("ok")
	b.Run("baseline", func(b *testing.B) {
		benchmarkHandler(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = contentType
			w.WriteHeader(http.StatusOK)
			w.Write(ok)
		}), "/readyz")
	})
	b.Run("plain", func(b *testing.B) { benchmarkHandler(b, ld.ReadinessHandler(), "/readyz") })
	b.Run("liveness", func(b *testing.B) { benchmarkHandler(b, ld.LivenessHandler(), "/livez") })
	b.Run("verbose", func(b *testing.B) { benchmarkHandler(b, ld.ReadinessHandler(), "/readyz?verbose") })

	withCheck, err := lameduck.New(lameduck.WithLogger(discard))
	if err != nil {
		b.Fatal(err)
	}
	withCheck.AddCheck(lameduck.Check{Name: "db", Func: passing})
	withCheck.MarkReady()
	b.Run("check", func(b *testing.B) { benchmarkHandler(b, withCheck.ReadinessHandler(), "/readyz") })
	b.Run("check-verbose", func(b *testing.B) { benchmarkHandler(b, withCheck.ReadinessHandler(), "/readyz?verbose") })
}
