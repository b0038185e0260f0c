package lameduck_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/fakeclock"
)

// repeat joins n copies of part, numbered, with "&".
func repeat(n int, part string) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(strings.ReplaceAll(part, "#", strings.Repeat("x", i%7)))
	}
	return b.String()
}

func TestProbeAnswersStaySmallWhateverTheQuery(t *testing.T) {
	ld, err := lameduck.New(lameduck.WithLogger(discard))
	require.NoError(t, err)
	ld.AddCheck(lameduck.Check{Name: "db", Func: passing})
	ld.AddCheck(lameduck.Check{Name: "cache", Func: func(context.Context) error { return errors.New("down: password=hunter2") }})
	ld.MarkReady()
	h := ld.ReadinessHandler()
	failedVerbose := "[+]started ok\n[+]shutdown ok\n[+]db ok\n[-]cache failed\n"
	tests := []struct {
		name  string
		query string
		code  int
		body  string // the whole answer; empty to check only its size
	}{
		{"escaped name", "exclude=c%61che", http.StatusOK, "ok"},
		{"plus in a name", "exclude=ca+che", http.StatusServiceUnavailable, "cache"},
		{"malformed escapes", "exclude=%zz&exclude=%&exclude=%c&verbose=%%", http.StatusServiceUnavailable,
			failedVerbose + "readyz check failed\n"},
		{"injected lines", "verbose&exclude=%0A%5B%2B%5Dcache%20ok%0Areadyz%20check%20passed%0A", http.StatusServiceUnavailable,
			failedVerbose + "warn: 1 excluded names match no check\nreadyz check failed\n"},
		{"repeated parameters", repeat(10_000, "verbose&exclude=cache"), http.StatusOK,
			"[+]started ok\n[+]shutdown ok\n[+]db ok\n[+]cache excluded: ok\nreadyz check passed\n"},
		{"10,000 unknown names", "verbose&" + repeat(10_000, "exclude=name#"), http.StatusServiceUnavailable,
			failedVerbose + "warn: 64 excluded names match no check\nreadyz check failed\n"},
		{"1 MB of separators", strings.Repeat("&=", 1<<19), http.StatusServiceUnavailable, "cache"},
		{"1 MB name", "exclude=" + strings.Repeat("%41", 1<<18) + "&verbose", http.StatusServiceUnavailable, ""},
		{"control bytes and bad UTF-8", "verbose\x00&exclude=\xff\xfe&\r\n=", http.StatusServiceUnavailable, "cache"},
		{"semicolons are not separators", "verbose;exclude=cache", http.StatusServiceUnavailable, "cache"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/readyz", nil)
			r.URL.RawQuery = tt.query
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			assert.Equal(t, tt.code, w.Code)
			if tt.body != "" {
				assert.Equal(t, tt.body, w.Body.String())
			}
			assert.LessOrEqual(t, w.Body.Len(), 200, "the answer never echoes the query")
			assert.NotContains(t, w.Body.String(), "hunter2")
		})
	}

	// However long the query, a probe allocates about as much as for the
	// longest query it reads: excluded names are capped. (The checks'
	// goroutines make the count vary a little.)
	allocs := func(query string) float64 {
		r := httptest.NewRequest(http.MethodGet, "/readyz", nil)
		r.URL.RawQuery = query
		w := &discardWriter{h: make(http.Header)}
		return testing.AllocsPerRun(20, func() { h.ServeHTTP(w, r) })
	}
	capped := allocs("verbose&" + repeat(64, "exclude=n%41me#"))
	assert.Less(t, capped, 300.0)
	assert.LessOrEqual(t, allocs("verbose&"+repeat(20_000, "exclude=n%41me#")), capped*1.1)
	assert.LessOrEqual(t, allocs(strings.Repeat("&=", 1<<19)), capped*1.1)
}

func TestReadinessFloodRunsEachCheckOnceAtATime(t *testing.T) {
	for _, cache := range []time.Duration{0, time.Second} {
		t.Run("cache "+cache.String(), func(t *testing.T) {
			clock := fakeclock.New()
			ld, err := lameduck.New(lameduck.WithLogger(discard), clock.Option())
			require.NoError(t, err)
			release := make(chan struct{})
			var calls, running, most atomic.Int32
			ld.AddCheck(lameduck.Check{Name: "slow", Timeout: 2 * time.Second, Cache: cache, Func: func(ctx context.Context) error {
				calls.Add(1)
				n := running.Add(1)
				defer running.Add(-1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				<-release // ignores ctx, like a dependency that hangs
				return nil
			}})
			ld.MarkReady()
			h := ld.ReadinessHandler()

			const probes = 500
			var wg sync.WaitGroup
			answers := make(chan string, probes)
			for range probes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					code, body := probe(t, h, http.MethodGet, "/readyz")
					answers <- http.StatusText(code) + " " + body
				}()
			}
			clock.AwaitTimer(t, 2*time.Second)
			clock.Advance(2 * time.Second)
			await.Wait(t, &wg, "the probes")
			close(answers)
			for a := range answers {
				assert.Equal(t, "Service Unavailable slow", a, "a check that hangs fails at its timeout")
			}
			assert.Equal(t, int32(1), calls.Load(), "every probe shares the one call")

			// While the call still hangs, probes answer at once.
			code, _ := probe(t, h, http.MethodGet, "/readyz")
			assert.Equal(t, http.StatusServiceUnavailable, code)
			assert.Equal(t, int32(1), calls.Load())

			close(release)
			if cache > 0 {
				code, _ = probe(t, h, http.MethodGet, "/readyz")
				assert.Equal(t, http.StatusServiceUnavailable, code, "the failure is cached like a success")
			}
			assert.Equal(t, int32(1), most.Load(), "never two calls of a check at once")
		})
	}
}

// recordHandler is a slog.Handler that hands every record to the test.
type recordHandler struct{ records chan slog.Record }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h recordHandler) WithGroup(string) slog.Handler            { return h }

func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.records <- r.Clone()
	return nil
}

// await returns the attributes of the next record with message msg.
func (h recordHandler) await(t *testing.T, msg string) map[string]string {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case r := <-h.records:
			if r.Message != msg {
				continue
			}
			attrs := make(map[string]string)
			r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
			return attrs
		case <-timeout:
			t.Fatalf("%q never logged", msg)
			return nil
		}
	}
}

func TestCheckErrorsAreLoggedNotServed(t *testing.T) {
	logs := recordHandler{make(chan slog.Record, 100)}
	ld, err := lameduck.New(lameduck.WithLogger(slog.New(logs)))
	require.NoError(t, err)
	secret := "dial tcp 10.0.0.7:5432: connect: connection refused; password=hunter2"
	ld.AddCheck(lameduck.Check{Name: "db", Func: func(context.Context) error { return errors.New(secret) }})
	ld.MarkReady()
	h := ld.ReadinessHandler()
	for _, target := range []string{"/readyz", "/readyz?verbose", "/readyz?verbose&exclude=nope", "/readyz?verbose=1&verbose"} {
		code, body := probe(t, h, http.MethodGet, target)
		assert.Equal(t, http.StatusServiceUnavailable, code, target)
		assert.NotContains(t, body, "hunter2", target)
		assert.NotContains(t, body, "10.0.0.7", target)
	}
	attrs := logs.await(t, "lameduck: readiness check failed")
	assert.Equal(t, "db", attrs["check"])
	assert.Equal(t, secret, attrs["error"], "the details go to the log")
}

func FuzzCheckName(f *testing.F) {
	for _, seed := range []string{"db", "", "started", "a b", "db\n[+]x", "ünïcode", "a&b=c", "%41", "+", "\xff", "x\u2028y", "\u00a0", "\u200b"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ld, err := lameduck.New(lameduck.WithLogger(discard))
		if err != nil {
			t.Fatal(err)
		}
		var rejected any
		func() {
			defer func() { rejected = recover() }()
			ld.AddCheck(lameduck.Check{Name: name, Func: passing})
		}()
		if rejected != nil {
			msg, ok := rejected.(string)
			if !ok || !strings.HasPrefix(msg, "lameduck: AddCheck: ") || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("AddCheck(%q) panicked with %#v; want one line starting with %q", name, rejected, "lameduck: AddCheck: ")
			}
			return
		}
		ld.MarkReady()
		h := ld.ReadinessHandler()
		// An accepted name is one line of the verbose answer, and
		// ?exclude finds it.
		_, body := probe(t, h, http.MethodGet, "/readyz?verbose")
		if want := "[+]started ok\n[+]shutdown ok\n[+]" + name + " ok\nreadyz check passed\n"; body != want {
			t.Fatalf("check %q: verbose answer %q, want %q", name, body, want)
		}
		_, body = probe(t, h, http.MethodGet, "/readyz?verbose&exclude="+url.QueryEscape(name))
		if want := "[+]started ok\n[+]shutdown ok\n[+]" + name + " excluded: ok\nreadyz check passed\n"; body != want {
			t.Fatalf("check %q: answer with ?exclude %q, want %q", name, body, want)
		}
	})
}
