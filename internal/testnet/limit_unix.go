//go:build unix

package testnet

import (
	"syscall"
	"testing"
)

// RaiseFileLimit raises the open-file limit to at least need, or as far as
// the hard limit allows, for tests that hold thousands of connections.
func RaiseFileLimit(tb testing.TB, need uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= need {
		return
	}
	lim.Cur = min(need, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Logf("raising the open-file limit: %v", err)
	}
}
