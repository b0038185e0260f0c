//go:build !unix

package testnet

import "testing"

// RaiseFileLimit does nothing where there is no RLIMIT_NOFILE.
func RaiseFileLimit(testing.TB, uint64) {}
