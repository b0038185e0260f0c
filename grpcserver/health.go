package grpcserver

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthService is the standard health service, whose Watch streams end
// when the drain begins. health.Server.Watch returns only when its stream's
// context ends, and GracefulStop waits for it: an open Watch, which
// grpc-health-probe -watch, service meshes and grpc-go's client-side health
// checking keep, would otherwise hold the exit until the deadline.
type healthService struct {
	*health.Server
	stop context.Context // ends when the drain begins, or at Close
}

func (h *healthService) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(h.stop, cancel)()
	ws := &watchStream{Health_WatchServer: stream, ctx: ctx, last: -1}
	err := h.Server.Watch(req, ws)
	if h.stop.Err() == nil || stream.Context().Err() != nil {
		return err // the client went away, or sending failed
	}
	// The drain began. Watch may have seen it before the last change of
	// status: make sure the client has the current one, then end the
	// stream. The status is NOT_SERVING (health.Server.Shutdown) unless
	// the service is unknown.
	now := healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	if resp, err := h.Server.Check(stream.Context(), req); err == nil {
		now = resp.Status
	} else if status.Code(err) != codes.NotFound {
		return err
	}
	if ws.last != now {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: now}); err != nil {
			return err
		}
	}
	return nil
}

// watchStream is a Watch stream whose context ends when the drain begins,
// and which remembers the last status sent.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx  context.Context
	last healthpb.HealthCheckResponse_ServingStatus // -1 before the first Send
}

func (w *watchStream) Context() context.Context { return w.ctx }

func (w *watchStream) Send(resp *healthpb.HealthCheckResponse) error {
	w.last = resp.Status
	return w.Health_WatchServer.Send(resp)
}
