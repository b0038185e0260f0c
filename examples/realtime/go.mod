// The real-time example is a module of its own so that the websocket
// libraries it and its tests use stay out of the root module: a service
// gets a websocket library only when it chooses one. In the repository,
// go.work uses the working tree of lameduck.
module github.com/lameduck/lameduck/examples/realtime

go 1.24.0

require (
	github.com/coder/websocket v1.8.15
	github.com/gorilla/websocket v1.5.3
	github.com/lameduck/lameduck v0.1.0
	github.com/stretchr/testify v1.11.1
	go.uber.org/goleak v1.3.0
)

require (
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
