// The real-time example is a module of its own so that the websocket
// libraries it and its tests use stay out of the root module: a service
// gets a websocket library only when it chooses one. grpcserver and
// grpc-go are its benchmark's, which serves gRPC streams beside the
// websockets and event streams. In the repository, go.work uses the
// working tree of lameduck and grpcserver.
module github.com/lameduck/lameduck/examples/realtime

go 1.24.0

require (
	github.com/coder/websocket v1.8.15
	github.com/gorilla/websocket v1.5.3
	github.com/lameduck/lameduck v0.1.0
	github.com/lameduck/lameduck/grpcserver v0.1.0
	github.com/stretchr/testify v1.11.1
	go.uber.org/goleak v1.3.0
	google.golang.org/grpc v1.80.0
)

require (
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	golang.org/x/net v0.49.0 // indirect
	golang.org/x/sys v0.40.0 // indirect
	golang.org/x/text v0.33.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260120221211-b8f7ae30c516 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
