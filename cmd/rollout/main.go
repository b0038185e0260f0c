// Command rollout replays a Kubernetes rolling update on this machine, on
// loopback only, and counts the requests that fail while it happens.
//
// A userspace load balancer plays kube-proxy: it pins each connection to one
// pod, keeps routing new connections to a terminating pod for -lag after its
// SIGTERM, and passes resets through. Pods are real processes started from
// the -pod template. Load runs through every rollout with clients that never
// retry behind your back.
//
// Usage:
//
//	rollout [flags]
//	rollout -compare [flags]
//	rollout -draw FILE.json -report FILE.png
//
// Examples:
//
//	go run ./cmd/rollout                         # the project's examples/httpserver
//	go run ./cmd/rollout -load h2c -cycles 5
//	go run ./cmd/rollout -pod './myserver -listen {ADDR}' -ready-path /healthz
//	go run ./cmd/rollout -compare -cycles 2      # naive vs textbook vs lameduck
//	go run ./cmd/rollout -compare -cycles 2 -report rollout.png
//	go run ./cmd/rollout -load websocket -c 200 -departure-window 2s -report ws.png
//
// -load websocket and -load sse hold one websocket or event stream per
// client connection, of numbered messages (each message counts as a
// request), and resume through the load balancer after the last one
// received whenever the pod sends the client away (a close with 1012 or
// 1001, an event stream ended after its retry field); any other end, and
// any gap in the numbers, is a failure. Without -pod they run the built-in
// lameduck pod, which serves /ws and /events (-departure-window sets its
// window; -compare runs all three built-in pods). Each rollout's report
// adds a line with the clients sent away, those that reconnected, and the
// most reconnections in any 100 ms against their average.
//
// The report ends with one machine-readable line of the totals,
// "requests=N failed=F" followed by "KIND=N" for each kind of failure seen
// (refused, reset, eof, 5xx, timeout, other); -compare prints such a line
// per built-in server on standard output, "server=NAME requests=N
// failed=F ...", and the detailed reports on standard error.
//
// -report FILE draws what happened: one panel per server, each with its own
// time axis and a caption that says why its requests failed; one lane per
// pod, with the requests it served, each pod's events (ready, SIGTERM,
// endpoint removed from the load balancer, listener closed, exit), a row
// per kind of failed request, a glyph each or bars and a count where they
// crowd, and for the websocket and sse loads a row of bars per 100 ms of
// the clients the pod sent away and of those that reconnected to it. FILE ends in .png or .svg; .json writes the recorded data
// instead, every setting of the run included, durations in seconds. -draw
// FILE.json draws such data and runs nothing: the record of a run, or the
// one package lameducktest writes when a test fails, which names the file
// in the test's log:
//
//	go run github.com/lameduck/lameduck/cmd/rollout@latest -draw rollout.json -report rollout.png
package main

import (
	"github.com/lameduck/lameduck/cmd/rollout/internal/picture"
	"github.com/lameduck/lameduck/grpcserver/grpcload"
	"github.com/lameduck/lameduck/lameducktest/rolloutcmd"
)

// The command's body is package rolloutcmd, in the root module with the
// simulator; this module gives it the parts that need dependencies of
// their own, which the services that require the root module never build:
// the gRPC client and the plotting library.
func main() { rolloutcmd.Main(grpcload.Load(), picture.WriteFile) }
