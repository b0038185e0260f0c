package grpcload

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// A failed call is classified by its status code and, for UNAVAILABLE
// (grpc-go's code for every transport failure), by whether any server saw
// it and by the message: nothing may be misread as a reset of a connection
// that had carried calls.
func TestFailure(t *testing.T) {
	for _, tt := range []struct {
		name   string
		err    error
		silent bool
		want   record.Kind
	}{
		{"no server heard", status.Error(codes.Unavailable, "connection closed before server preface received"), true, record.KindRefused},
		{"refused", status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\""), false, record.KindRefused},
		{"reset", status.Error(codes.Unavailable, "read tcp: connection reset by peer"), false, record.KindReset},
		{"closed under the call", status.Error(codes.Unavailable, "error reading from server: EOF"), false, record.KindEOF},
		{"deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), false, record.KindTimeout},
		{"application", status.Error(codes.Internal, "boom"), false, record.KindOther},
		{"not a status", errors.New("boom"), true, record.KindOther},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := failure(tt.err, tt.silent)
			assert.Equal(t, tt.want, f.Kind)
			assert.ErrorIs(t, f, tt.err)
		})
	}
}
