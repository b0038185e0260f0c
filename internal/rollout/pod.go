package rollout

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// Placeholders replaced in a [PodSpec]'s command and environment.
const (
	// AddrPlaceholder is replaced by the pod's listen address,
	// 127.0.0.1:PORT with a free PORT. The load balancer routes to it.
	AddrPlaceholder = "{ADDR}"
	// ProbeAddrPlaceholder is replaced by a second free address, for pods
	// (such as gRPC servers) that answer the HTTP readiness probe on a port
	// of their own. When the command uses it, the probe goes there.
	ProbeAddrPlaceholder = "{PROBE_ADDR}"
)

// PodSpec says how to start one pod: a process that listens on the address
// substituted for {ADDR} and answers the readiness probe.
type PodSpec struct {
	// Command is the program and its arguments, with placeholders
	// ({ADDR}, {PROBE_ADDR}) anywhere in them. See [ParseCommand] to build
	// it from one string.
	Command []string
	// Env holds extra KEY=value variables, added to the simulator's own
	// environment. Placeholders are replaced here too.
	Env []string
	// Dir is the working directory; empty means the simulator's.
	Dir string
}

// uses reports whether placeholder appears in the command or environment.
func (s PodSpec) uses(placeholder string) bool {
	for _, list := range [][]string{s.Command, s.Env} {
		for _, a := range list {
			if strings.Contains(a, placeholder) {
				return true
			}
		}
	}
	return false
}

// ParseCommand splits a command line into arguments the way a POSIX shell
// splits words: blanks separate words, single quotes keep everything
// literally, double quotes keep blanks, and a backslash outside single
// quotes escapes the next character. There is no expansion of variables or
// globs. It lets a pod template be passed as one flag value, e.g.
// "./server -addr {ADDR} -drain-delay 2s".
func ParseCommand(s string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inWord  bool
		quote   rune // 0, '\'' or '"'
		escaped bool
	)
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case quote == '"':
			if r == '"' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	switch {
	case quote != 0:
		return nil, fmt.Errorf("rollout: command %q has an unterminated %c quote", s, quote)
	case escaped:
		return nil, fmt.Errorf("rollout: command %q ends with a lone backslash", s)
	}
	if inWord {
		args = append(args, cur.String())
	}
	if len(args) == 0 {
		return nil, errors.New("rollout: the pod command is empty; give a program and its arguments, e.g. './server -addr {ADDR}'")
	}
	return args, nil
}

// PodExit describes how a terminated pod ended.
type PodExit struct {
	// Pod is the pod's name in the run ("pod-1", "pod-2", ...).
	Pod string
	// Exit is how it ended, as the run's timeline records it.
	record.Exit
}

// String renders the exit as in reports: "pod-1 exit status 0 after 2.01s".
func (e PodExit) String() string {
	s := fmt.Sprintf("%s %s after %s", e.Pod, e.Status, e.AfterTerm.Round(time.Millisecond))
	if e.Killed {
		s += " (SIGKILLed at the grace period)"
	}
	if e.Drain.Seen {
		s += "; " + drainString(e.Drain)
	}
	return s
}

// simulatorMark starts the lines the simulator adds to a pod's log.
const simulatorMark = "[rollout]"

// pod is one running pod process.
type pod struct {
	name      string
	addr      string
	probeAddr string // where the readiness probe goes: addr unless {PROBE_ADDR} is used
	// probePlaceholder names probeAddr's placeholder, for error messages.
	probePlaceholder string
	cmd              *exec.Cmd
	log              *podLog

	done   chan struct{} // closed when the process has been waited for
	exitAt time.Time     // set before done is closed
	state  *os.ProcessState
	werr   error

	mu     sync.Mutex
	termAt time.Time
	killed bool
	// The other events of the pod's life, for the timeline; zero until
	// they happen.
	startAt, readyAt, joinedAt, removedAt, listenerClosedAt time.Time
	drain                                                   record.Drain
}

// mark records the time of an event of the pod's life, now.
func (p *pod) mark(event *time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if event.IsZero() {
		*event = time.Now()
	}
}

// timeline returns the pod's life as offsets from epoch.
func (p *pod) timeline(epoch time.Time) record.Pod {
	var exit PodExit
	exited := record.Never
	select {
	case <-p.done:
		exit = p.exitStatus()
		exited = since(epoch, p.exitAt)
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return record.Pod{
		Name:           p.name,
		Started:        since(epoch, p.startAt),
		Ready:          since(epoch, p.readyAt),
		Joined:         since(epoch, p.joinedAt),
		Term:           since(epoch, p.termAt),
		Removed:        since(epoch, p.removedAt),
		ListenerClosed: since(epoch, p.listenerClosedAt),
		Exited:         exited,
		Exit:           exit.Exit,
	}
}

// listenerPoll is how often a terminating pod's port is checked for its
// listener: the precision of the "listener closed" event, at the price of
// a few system calls each time.
const listenerPoll = 2 * time.Millisecond

// watchListener records when the terminating pod stops listening, as seen
// from outside: once its port can be bound again. It returns when it has
// seen that, or when the pod has exited; the pod's listener closed at its
// exit at the latest.
func (p *pod) watchListener() {
	tick := time.NewTicker(listenerPoll)
	defer tick.Stop()
	closed := func() {
		at := time.Now()
		select {
		case <-p.done:
			// The process has exited meanwhile, and its listener closed
			// with it at the latest.
			if p.exitAt.Before(at) {
				at = p.exitAt
			}
		default:
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.listenerClosedAt = at
	}
	for {
		if !listening(p.addr) {
			closed()
			return
		}
		select {
		case <-tick.C:
		case <-p.done:
			if !listening(p.addr) {
				closed()
			}
			return
		}
	}
}

// startPod starts spec as a pod called name, its output going to log.
func startPod(spec PodSpec, name string, log *podLog) (*pod, error) {
	if len(spec.Command) == 0 {
		return nil, errors.New("the pod command is empty; set PodSpec.Command (or -pod) to a program and its arguments containing {ADDR}")
	}
	addr, err := freeLoopbackAddr("")
	if err != nil {
		return nil, err
	}
	p := &pod{name: name, addr: addr, probeAddr: addr, probePlaceholder: AddrPlaceholder, log: log, done: make(chan struct{})}
	repl := []string{AddrPlaceholder, addr}
	if spec.uses(ProbeAddrPlaceholder) {
		if p.probeAddr, err = freeLoopbackAddr(addr); err != nil {
			return nil, err
		}
		p.probePlaceholder = ProbeAddrPlaceholder
		repl = append(repl, ProbeAddrPlaceholder, p.probeAddr)
	}
	r := strings.NewReplacer(repl...)
	args := make([]string, len(spec.Command))
	for i, a := range spec.Command {
		args[i] = r.Replace(a)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = os.Environ()
	for _, e := range spec.Env {
		cmd.Env = append(cmd.Env, r.Replace(e))
	}
	stdout, stderr := log.writer(name), log.writer(name)
	stdout.onLine, stderr.onLine = p.readLine, p.readLine
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = podSysProcAttr()
	// A pod that leaves a child holding its stdout open must not make Wait
	// block forever.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pod %s (%s): %w; check the pod command", name, strings.Join(args, " "), err)
	}
	p.cmd = cmd
	p.startAt = time.Now()
	log.add(fmt.Sprintf("%s: "+simulatorMark+" started pid %d listening on %s: %s", name, cmd.Process.Pid, addr, strings.Join(args, " ")))
	go func() {
		err := cmd.Wait()
		stdout.Close()
		stderr.Close()
		p.exitAt = time.Now()
		p.state = cmd.ProcessState
		p.werr = err
		close(p.done)
	}()
	return p, nil
}

// terminate sends SIGTERM to the pod's main process only, as the kubelet
// signals a container's PID 1.
func (p *pod) terminate() error {
	p.mu.Lock()
	p.termAt = time.Now()
	p.mu.Unlock()
	return signalTerm(p.cmd.Process)
}

// kill sends SIGKILL to the pod's whole process group, as the kubelet kills
// every process of a container at the end of the grace period.
func (p *pod) kill(afterGrace bool) {
	p.mu.Lock()
	if afterGrace {
		p.killed = true
	}
	p.mu.Unlock()
	killGroup(p.cmd.Process)
}

// readLine reads what lameduck reports of the drain delay from a line of
// the pod's output.
func (p *pod) readLine(line string) {
	if r, ok := parseLameDuckLine(line); ok {
		p.mu.Lock()
		p.drain = r
		p.mu.Unlock()
	}
}

// exitStatus describes how the pod ended; call it after done is closed.
func (p *pod) exitStatus() PodExit {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := PodExit{Pod: p.name, Exit: record.Exit{Addr: p.addr, Code: -1, Killed: p.killed, Drain: p.drain}}
	if p.state != nil {
		e.Status = p.state.String()
		e.Code = p.state.ExitCode()
	} else if p.werr != nil {
		e.Status = p.werr.Error()
	}
	if !p.termAt.IsZero() {
		e.AfterTerm = p.exitAt.Sub(p.termAt)
	}
	return e
}

// lastLines returns the pod's last lines of output, for error messages.
func (p *pod) lastLines(n int) string {
	lines := p.log.tail(p.name+": ", n)
	if len(lines) == 0 {
		return "(the pod printed nothing)"
	}
	return "\n\t" + strings.Join(lines, "\n\t")
}

// lastWords describes the pod's last line of output (not the simulator's
// own lines about it), for the first line of an error message.
func (p *pod) lastWords() string {
	prefix := p.name + ": "
	for _, line := range slices.Backward(p.log.tail(prefix, logTailLines)) {
		if line = strings.TrimPrefix(line, prefix); !strings.HasPrefix(line, simulatorMark) {
			return fmt.Sprintf("last printing %q", line)
		}
	}
	return "printing nothing"
}

// freeLoopbackAddr returns 127.0.0.1:PORT with a port nothing listens on,
// other than avoid. It picks ports below the kernel's ephemeral range when it
// can: the load makes thousands of outgoing connections, and an ephemeral
// port handed to one of them between this check and the pod's bind would
// make the pod fail with "address already in use".
func freeLoopbackAddr(avoid string) (string, error) {
	lo := ephemeralLow()
	if lo > 11000 {
		for range 100 {
			port := 10000 + rand.IntN(lo-10000)
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			if addr == avoid {
				continue
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			ln.Close()
			return addr, nil
		}
	}
	for range 10 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("find a free loopback port: %w", err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if addr != avoid {
			return addr, nil
		}
	}
	return "", errors.New("could not find a free loopback port")
}

// ephemeralLow returns the bottom of Linux's ephemeral port range, or 0 if
// it is unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return lo
}
