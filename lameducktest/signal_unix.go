//go:build unix

package lameducktest

// canSignal reports whether pods can be sent SIGTERM.
const canSignal = true
