package record

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"
)

// runJSON is a [Run] as JSON.
type runJSON struct {
	Name     string       `json:"name"`
	Note     string       `json:"note,omitempty"`
	Settings settingsJSON `json:"settings"`
	Requests int64        `json:"requests"`
	Failed   int64        `json:"failed"`
	Failures KindCounts   `json:"failures"`
	Timeline timelineJSON `json:"timeline"`
}

// settingsJSON is every setting of the run, its defaults filled in. A lag
// or warm-up of zero means none.
type settingsJSON struct {
	PodCommand            []string `json:"pod_command"`
	PodEnv                []string `json:"pod_env,omitempty"`
	Rollouts              int      `json:"rollouts"`
	Replicas              int      `json:"replicas"`
	LagSeconds            float64  `json:"lag_seconds"`
	GraceSeconds          float64  `json:"grace_seconds"`
	ProbePeriodSeconds    float64  `json:"probe_period_seconds"`
	ReadyPath             string   `json:"ready_path"`
	ReadyTimeoutSeconds   float64  `json:"ready_timeout_seconds"`
	WarmupSeconds         float64  `json:"warmup_seconds"`
	Load                  string   `json:"load"`
	Conns                 int      `json:"conns"`
	WorkersPerConn        int      `json:"workers_per_conn"`
	Fresh                 int      `json:"fresh"`
	Late                  int      `json:"late"`
	Path                  string   `json:"path"`
	RequestTimeoutSeconds float64  `json:"request_timeout_seconds"`
	ListenAddr            string   `json:"listen_addr"`
}

type timelineJSON struct {
	IntervalSeconds  float64       `json:"interval_seconds"`
	LoadStartSeconds float64       `json:"load_start_seconds"`
	LoadEndSeconds   float64       `json:"load_end_seconds"`
	Pods             []podJSON     `json:"pods"`
	Failures         []failureJSON `json:"failures"`
	FailuresLeftOut  int64         `json:"failures_left_out"`
	ServedLeftOut    int64         `json:"served_left_out"`
}

// podJSON is one pod's life; its times are seconds from the start of the
// run, left out for events that did not happen.
type podJSON struct {
	Name                  string    `json:"name"`
	StartedSeconds        *float64  `json:"started_seconds,omitempty"`
	ReadySeconds          *float64  `json:"ready_seconds,omitempty"`
	JoinedSeconds         *float64  `json:"joined_seconds,omitempty"`
	TermSeconds           *float64  `json:"term_seconds,omitempty"`
	RemovedSeconds        *float64  `json:"removed_seconds,omitempty"`
	ListenerClosedSeconds *float64  `json:"listener_closed_seconds,omitempty"`
	ExitedSeconds         *float64  `json:"exited_seconds,omitempty"`
	Exit                  *exitJSON `json:"exit,omitempty"`
	// ServedPerInterval counts the requests served in each interval of
	// the timeline, from the start of the run.
	ServedPerInterval []int64 `json:"served_per_interval"`
	// DeparturesSeconds and ReconnectsSeconds are the moments of the
	// websocket and sse loads' departures from the pod and reconnections
	// to it; left out for other loads.
	DeparturesSeconds []float64 `json:"departures_seconds,omitempty"`
	ReconnectsSeconds []float64 `json:"reconnects_seconds,omitempty"`
}

func seconds(ds []time.Duration) []float64 {
	var s []float64
	for _, d := range ds {
		s = append(s, d.Seconds())
	}
	return s
}

func fromSeconds(s []float64) []time.Duration {
	var ds []time.Duration
	for _, x := range s {
		ds = append(ds, duration(x))
	}
	return ds
}

type exitJSON struct {
	Addr             string  `json:"addr"`
	Status           string  `json:"status"`
	Code             int     `json:"code"`
	Killed           bool    `json:"killed"`
	AfterTermSeconds float64 `json:"after_term_seconds"`
	// The drain delay, as the pod logged it, if it uses lameduck.
	DrainDelaySeconds  *float64 `json:"drain_delay_seconds,omitempty"`
	DrainDelayEnded    string   `json:"drain_delay_ended,omitempty"`
	LastArrivalSeconds *float64 `json:"last_arrival_seconds,omitempty"`
}

// failureJSON is one failed request; Pod is the name of the pod its
// connection went to, empty for none.
type failureJSON struct {
	AtSeconds float64 `json:"at_seconds"`
	Pod       string  `json:"pod,omitempty"`
	Kind      Kind    `json:"kind"`
}

func duration(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }

// at is an event's time, nil for Never.
func at(d time.Duration) *float64 {
	if d < 0 {
		return nil
	}
	s := d.Seconds()
	return &s
}

func fromAt(s *float64) time.Duration {
	if s == nil {
		return Never
	}
	return duration(*s)
}

// MarshalJSON writes the run as JSON for people and other programs as much
// as for ReadFile: it names every field in snake case, gives durations in
// seconds with "_seconds" in the name, counts failures by kind in an
// object, names pods by name, and leaves out the times of events that did
// not happen.
func (r Run) MarshalJSON() ([]byte, error) {
	s := r.Settings
	tl := r.Timeline
	j := runJSON{
		Name: r.Name, Note: r.Note, Requests: r.Requests, Failed: r.Failed(), Failures: r.Failures,
		Settings: settingsJSON{
			PodCommand: s.PodCommand, PodEnv: s.PodEnv, Rollouts: s.Rollouts, Replicas: s.Replicas,
			LagSeconds: s.Lag.Seconds(), GraceSeconds: s.Grace.Seconds(), ProbePeriodSeconds: s.ProbePeriod.Seconds(),
			ReadyPath: s.ReadyPath, ReadyTimeoutSeconds: s.ReadyTimeout.Seconds(), WarmupSeconds: s.Warmup.Seconds(),
			Load: s.Load, Conns: s.Conns, WorkersPerConn: s.WorkersPerConn, Fresh: s.Fresh, Late: s.Late,
			Path: s.Path, RequestTimeoutSeconds: s.RequestTimeout.Seconds(), ListenAddr: s.ListenAddr,
		},
		Timeline: timelineJSON{
			IntervalSeconds: tl.Interval.Seconds(), LoadStartSeconds: tl.LoadStart.Seconds(), LoadEndSeconds: tl.LoadEnd.Seconds(),
			Pods: []podJSON{}, Failures: make([]failureJSON, 0, len(tl.Failures)),
			FailuresLeftOut: tl.FailuresLeftOut, ServedLeftOut: tl.ServedLeftOut,
		},
	}
	for _, p := range tl.Pods {
		pj := podJSON{
			Name: p.Name, StartedSeconds: at(p.Started), ReadySeconds: at(p.Ready), JoinedSeconds: at(p.Joined),
			TermSeconds: at(p.Term), RemovedSeconds: at(p.Removed), ListenerClosedSeconds: at(p.ListenerClosed),
			ExitedSeconds: at(p.Exited), ServedPerInterval: p.Served,
			DeparturesSeconds: seconds(p.Departures), ReconnectsSeconds: seconds(p.Reconnects),
		}
		if pj.ServedPerInterval == nil {
			pj.ServedPerInterval = []int64{}
		}
		if p.Exited >= 0 {
			e := p.Exit
			pj.Exit = &exitJSON{Addr: e.Addr, Status: e.Status, Code: e.Code, Killed: e.Killed, AfterTermSeconds: e.AfterTerm.Seconds()}
			if d := e.Drain; d.Seen {
				pj.Exit.DrainDelaySeconds, pj.Exit.DrainDelayEnded = at(d.Delay), d.Ended
				if d.LastArrival > 0 {
					pj.Exit.LastArrivalSeconds = at(d.LastArrival)
				}
			}
		}
		j.Timeline.Pods = append(j.Timeline.Pods, pj)
	}
	for _, f := range tl.Failures {
		fj := failureJSON{AtSeconds: f.At.Seconds(), Kind: f.Kind}
		if f.Pod >= 0 && f.Pod < len(tl.Pods) {
			fj.Pod = tl.Pods[f.Pod].Name
		}
		j.Timeline.Failures = append(j.Timeline.Failures, fj)
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Run) UnmarshalJSON(b []byte) error {
	var j runJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	s := j.Settings
	*r = Run{
		Name: j.Name, Note: j.Note, Requests: j.Requests, Failures: j.Failures,
		Settings: Settings{
			PodCommand: s.PodCommand, PodEnv: s.PodEnv, Rollouts: s.Rollouts, Replicas: s.Replicas,
			Lag: duration(s.LagSeconds), Grace: duration(s.GraceSeconds), ProbePeriod: duration(s.ProbePeriodSeconds),
			ReadyPath: s.ReadyPath, ReadyTimeout: duration(s.ReadyTimeoutSeconds), Warmup: duration(s.WarmupSeconds),
			Load: s.Load, Conns: s.Conns, WorkersPerConn: s.WorkersPerConn, Fresh: s.Fresh, Late: s.Late,
			Path: s.Path, RequestTimeout: duration(s.RequestTimeoutSeconds), ListenAddr: s.ListenAddr,
		},
	}
	if got := j.Failures.Sum(); got != j.Failed {
		return fmt.Errorf("run %q: failed is %d but its failures by kind add up to %d", j.Name, j.Failed, got)
	}
	t := j.Timeline
	tl := Timeline{
		Interval: duration(t.IntervalSeconds), LoadStart: duration(t.LoadStartSeconds), LoadEnd: duration(t.LoadEndSeconds),
		FailuresLeftOut: t.FailuresLeftOut, ServedLeftOut: t.ServedLeftOut,
	}
	for _, p := range t.Pods {
		pt := Pod{
			Name: p.Name, Started: fromAt(p.StartedSeconds), Ready: fromAt(p.ReadySeconds), Joined: fromAt(p.JoinedSeconds),
			Term: fromAt(p.TermSeconds), Removed: fromAt(p.RemovedSeconds), ListenerClosed: fromAt(p.ListenerClosedSeconds),
			Exited: fromAt(p.ExitedSeconds), Departures: fromSeconds(p.DeparturesSeconds), Reconnects: fromSeconds(p.ReconnectsSeconds),
		}
		if len(p.ServedPerInterval) > 0 {
			pt.Served = p.ServedPerInterval
		}
		if e := p.Exit; e != nil {
			pt.Exit = Exit{Addr: e.Addr, Status: e.Status, Code: e.Code, Killed: e.Killed, AfterTerm: duration(e.AfterTermSeconds)}
			if e.DrainDelaySeconds != nil {
				pt.Exit.Drain = Drain{Seen: true, Delay: fromAt(e.DrainDelaySeconds), Ended: e.DrainDelayEnded}
				if e.LastArrivalSeconds != nil {
					pt.Exit.Drain.LastArrival = duration(*e.LastArrivalSeconds)
				}
			}
		}
		tl.Pods = append(tl.Pods, pt)
	}
	for _, f := range t.Failures {
		fa := Failure{At: duration(f.AtSeconds), Pod: -1, Kind: f.Kind}
		if f.Pod != "" {
			if fa.Pod = slices.IndexFunc(tl.Pods, func(p Pod) bool { return p.Name == f.Pod }); fa.Pod < 0 {
				return fmt.Errorf("run %q: a failure at %gs names pod %q, which is not among its pods", j.Name, f.AtSeconds, f.Pod)
			}
		}
		tl.Failures = append(tl.Failures, fa)
	}
	r.Timeline = tl
	return nil
}
