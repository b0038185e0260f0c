package main

// NewServer is newServer, for the benchmark, which runs the service in
// the test process beside a gRPC server of its own.
var NewServer = newServer
