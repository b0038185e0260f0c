package rolloutcmd

import (
	"context"
	"io"

	"github.com/lameduck/lameduck/lameducktest"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// Run runs the command as [Main] does, with args, the arguments after its
// name, and the parts grpc and draw, and returns its exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, grpc lameducktest.Load, draw func(path string, runs ...record.Run) error) int {
	return run(ctx, args, stdout, stderr, parts{grpc: grpc, draw: draw})
}
