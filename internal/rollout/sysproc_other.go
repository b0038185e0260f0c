//go:build !unix

package rollout

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// signalTerm cannot deliver SIGTERM here: the simulator needs a Unix-like
// system, as Kubernetes pods do.
func signalTerm(p *os.Process) error {
	return errors.New("rollout: sending SIGTERM to a pod needs a Unix-like OS (Linux or macOS)")
}

func killGroup(p *os.Process) { p.Kill() }

func podSysProcAttr() *syscall.SysProcAttr { return nil }

// listening cannot tell here; it is never called, see canWatchListeners.
func listening(string) bool { return true }

// canWatchListeners says that the timeline has no "listener closed" events
// here.
const canWatchListeners = false

// bindEphemeral leaves the choice of port to connect here: a connection
// reset before connect returns is not traced to its pod.
func bindEphemeral(uintptr, string) (net.Addr, error) { return nil, nil }
