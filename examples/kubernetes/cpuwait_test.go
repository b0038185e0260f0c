package kubernetes

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// On the rig, every pod's container shares one CPU cgroup, weighted as a
// single process of the host: while other processes load the host's
// cores, a pod waits for a CPU, and may learn late that its EndpointSlices
// stopped routing to it, however promptly the API server told it. The test
// measures that wait, from the scheduler's own account, so that a pod late
// for want of a CPU is told apart from a pod late by its own doing.

// cpuWaitPoll is the period of the samples of a pod's wait for a CPU.
const cpuWaitPoll = 50 * time.Millisecond

// cpuSample is how long, in all, a pod's threads had waited for a CPU at
// a moment: the second field of /proc/PID/task/TID/schedstat, summed.
type cpuSample struct {
	at     time.Time
	waited time.Duration
}

// sampleCPUWait samples the wait for a CPU of the process of the container
// id (as the pod's status names it, "containerd://…") until it exits or
// ctx ends, recording the samples in the pod's record.
func sampleCPUWait(ctx context.Context, o *observations, name, id string) {
	_, id, _ = strings.Cut(id, "://")
	if id == "" {
		return
	}
	tick := time.NewTicker(cpuWaitPoll)
	defer tick.Stop()
	pid := ""
	for {
		if pid == "" {
			pid = containerPID(id)
		}
		if pid != "" {
			waited, ok := threadsWaited(pid)
			if !ok {
				return // the process has exited
			}
			o.mu.Lock()
			p := o.pod(name)
			p.cpuWait = append(p.cpuWait, cpuSample{at: time.Now(), waited: waited})
			o.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// containerPID returns the process whose cgroup is the container's, or ""
// if there is none yet.
func containerPID(id string) string {
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, f := range procs {
		data, err := os.ReadFile(f)
		if err == nil && bytes.Contains(data, []byte(id)) {
			return filepath.Base(filepath.Dir(f))
		}
	}
	return ""
}

// threadsWaited sums the time pid's threads have waited on a run queue,
// and reports whether pid still runs.
func threadsWaited(pid string) (time.Duration, bool) {
	stats, _ := filepath.Glob("/proc/" + pid + "/task/*/schedstat")
	if len(stats) == 0 {
		return 0, false
	}
	var sum time.Duration
	for _, f := range stats {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that ended
		}
		if fields := strings.Fields(string(data)); len(fields) >= 2 {
			ns, _ := strconv.ParseInt(fields[1], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum, true
}

// cpuWaited returns how long the pod's threads waited for a CPU between
// from and to, as far as the samples tell, and whether they tell.
func (p *podRecord) cpuWaited(from, to time.Time) (time.Duration, bool) {
	var first, last *cpuSample
	for i := range p.cpuWait {
		s := &p.cpuWait[i]
		if s.at.Before(from) || first == nil && s.at.Sub(from) < cpuWaitPoll {
			first = s
		}
		if !s.at.After(to) {
			last = s
		}
	}
	if first == nil || last == nil || !last.at.After(first.at) {
		return 0, false
	}
	return last.waited - first.waited, true
}

func TestCPUWaitedSpansTheSamplesOfTheWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	p := &podRecord{cpuWait: []cpuSample{
		{at(0), 10 * time.Millisecond},
		{at(50), 20 * time.Millisecond},
		{at(100), 70 * time.Millisecond},
		{at(150), 170 * time.Millisecond},
		{at(200), 180 * time.Millisecond},
	}}
	for _, c := range []struct {
		from, to int
		want     time.Duration
		ok       bool
	}{
		{60, 160, 150 * time.Millisecond, true}, // from the sample before 60 to the last at or before 160
		{0, 200, 170 * time.Millisecond, true},
		{-10, 120, 60 * time.Millisecond, true}, // a window begun just before sampling began
		{-500, 120, 0, false},                   // sampling began long after the window
		{190, 195, 0, false},                    // one sample, no span
	} {
		got, ok := p.cpuWaited(at(c.from), at(c.to))
		assert.Equal(t, c.ok, ok, "window %d..%d ms", c.from, c.to)
		assert.Equal(t, c.want, got, "window %d..%d ms", c.from, c.to)
	}
}

func TestThreadsWaitedReadsTheScheduler(t *testing.T) {
	if _, err := os.Stat("/proc/self/schedstat"); err != nil {
		t.Skipf("no /proc/PID/schedstat here: %v", err)
	}
	self := strconv.Itoa(os.Getpid())
	before, ok := threadsWaited(self)
	require.True(t, ok, "this process runs")
	after, ok := threadsWaited(self)
	require.True(t, ok)
	assert.GreaterOrEqual(t, after, before, "a wait for a CPU, summed, only grows")
	_, ok = threadsWaited("0")
	assert.False(t, ok, "no process 0 in /proc")
}
