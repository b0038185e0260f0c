package lameduck

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
)

// A WorkOption configures a worker added with [Coordinator.Go] or a hook
// added with [Coordinator.OnShutdown].
type WorkOption interface {
	applyWork(*work)
}

type workOptionFunc func(*work)

func (f workOptionFunc) applyWork(w *work) { f(w) }

// Named names a worker or a shutdown hook in the logs and errors that
// speak of it, such as one that failed, panicked, hung or was cut:
//
//	ld.OnShutdown(pool.Shutdown, lameduck.Named("db pool"))
//
// Without it, work is named after the file and line that registered it,
// such as "main.go:42".
func Named(name string) WorkOption {
	return workOptionFunc(func(w *work) { w.name = strconv.Quote(name) })
}

// work is a worker or a shutdown hook.
type work struct {
	f func(context.Context) error
	// name is what logs and errors call it: the quoted name given with
	// Named, or where it was registered.
	name string
}

// newWork returns f named by opts, or after the code that called Go or
// OnShutdown, three calls up (Go or OnShutdown, then addWork, then newWork).
func newWork(method string, f func(context.Context) error, opts []WorkOption) work {
	w := work{f: f}
	for _, o := range opts {
		if o == nil {
			panic("lameduck: " + method + ": an option is nil")
		}
		o.applyWork(&w)
	}
	if w.name == "" {
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
