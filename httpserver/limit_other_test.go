//go:build !unix

package httpserver_test

import "testing"

// raiseFileLimit does nothing where there is no RLIMIT_NOFILE.
func raiseFileLimit(testing.TB, uint64) {}
