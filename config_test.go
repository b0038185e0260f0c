package lameduck_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

func TestMisuseIsExplained(t *testing.T) {
	tests := []struct {
		name string
		do   func(ld *lameduck.Coordinator) error
		// Exactly one of panics and err is set: the panic value or a part
		// of the error.
		panics string
		err    string
	}{
		{
			name: "Run with a nil context",
			do: func(ld *lameduck.Coordinator) error {
				//lint:ignore SA1012 the misuse under test
				return ld.Run(nil)
			},
			err: "lameduck: Run: the context is nil; pass context.Background()",
		},
		{
			name: "the same server registered twice",
			do: func(ld *lameduck.Coordinator) error {
				s := newFakeServer("a", newCallLog())
				ld.Register(s)
				ld.Register(s)
				return nil
			},
			panics: "lameduck: Register: the server is already registered; register each server once, with Register or RegisterAdmin",
		},
		{
			name: "a check named like a built-in one",
			do: func(ld *lameduck.Coordinator) error {
				ld.AddCheck(lameduck.Check{Name: "started", Func: passing})
				return nil
			},
			panics: `lameduck: AddCheck: the name "started" is reserved for a built-in check; choose another`,
		},
		{
			name: "a check name with a line separator",
			do: func(ld *lameduck.Coordinator) error {
				ld.AddCheck(lameduck.Check{Name: "db\u2028[+]x", Func: passing})
				return nil
			},
			panics: "lameduck: AddCheck: the name \"db\\u2028[+]x\" has spaces or control characters; use letters, digits, '-', '_' or '.'",
		},
		{
			name:   "an unknown kind of work",
			do:     func(*lameduck.Coordinator) error { new(inflight.Tracker).Start(inflight.Kind(3)); return nil },
			panics: "inflight: unknown Kind 3",
		},
		{
			name: "more work in flight than a Tracker counts",
			do: func(*lameduck.Coordinator) error {
				var tr inflight.Tracker
				for range 1<<21 - 1 {
					tr.Start(inflight.Conn)
				}
				tr.Start(inflight.Conn)
				return nil
			},
			panics: "inflight: Tracker.Start: more than 2097151 connections in flight",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithLogger(discard))
			require.NoError(t, err)
			if tt.panics != "" {
				assert.PanicsWithValue(t, tt.panics, func() { tt.do(ld) })
				return
			}
			err = tt.do(ld)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.err)
		})
	}
}

func TestRunWithANilContextStartsNothing(t *testing.T) {
	h := newHarness(t)
	h.ld.Register(newFakeServer("a", h.log))
	//lint:ignore SA1012 the misuse under test
	require.Error(t, h.ld.Run(nil))
	assert.Empty(t, h.log.all(), "no server listens")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, h.ld.Run(ctx), "Run can still run once with a context")
	assert.Equal(t, []string{"a listen", "a lame duck", "a drain", "a close"}, h.log.all())
}
