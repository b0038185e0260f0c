package lameduck

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
)

// work is a worker or a shutdown hook.
type work struct {
	f func(context.Context) error
	// name is what logs and errors call it: the quoted name given to Go
	// or OnShutdown, or where it was registered.
	name string
}

// newWork returns f named name, or, if name is empty, after the code that
// called Go or OnShutdown, three calls up (Go or OnShutdown, then addWork,
// then newWork).
func newWork(name string, f func(context.Context) error) work {
	w := work{f: f, name: strconv.Quote(name)}
	if name == "" {
		w.name = "(unknown place)"
		if _, file, line, ok := runtime.Caller(3); ok {
			w.name = fmt.Sprintf("%s:%d", filepath.Base(file), line)
		}
	}
	return w
}

// call calls w, turning a panic into an error.
func (w work) call(ctx context.Context) error { return call(ctx, w.f) }

// call calls a worker, a hook or a check, turning a panic into an error.
func call(ctx context.Context, f func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return f(ctx)
}
