// Package report records rolling updates run by package rollout, for a
// picture of them: [Run] is one run as [FromResult] takes it from a
// [rollout.Result], [WriteFile] writes runs as JSON and [ReadFile] reads
// them back.
//
// The picture itself (one panel per run, one lane per pod, the requests
// each pod served, every failed request by kind where and when it happened,
// and the events of each pod's life) is drawn by the rollout command, from
// a run or from such a file: its plotting library is a dependency of the
// command's module only, so that package lameducktest, which records the
// rolling update of a failed test here, compiles no plotting package into
// the tests of the services that use it.
package report

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/lameduck/lameduck/internal/rollout"
)

// Run is one recorded run, drawn as one panel. Its JSON (see
// [Run.MarshalJSON]) names every field, gives durations in seconds, and
// records every setting of the run.
type Run struct {
	// Name names the server, such as "naive".
	Name string
	// Note says in a few words what the server does on SIGTERM; it may be
	// empty.
	Note string
	// Settings is the run's configuration, its defaults filled in; its
	// PodLog is not recorded.
	Settings rollout.Config
	// Requests and Failures are the run's exact totals, which the
	// timeline's bounded lists may not add up to.
	Requests int64
	Failures rollout.KindCounts
	// Timeline is what happened, over time.
	Timeline rollout.Timeline
}

// FromResult returns the run that res recorded, under name and note.
func FromResult(name, note string, res *rollout.Result) Run {
	settings := res.Config
	settings.PodLog = nil
	return Run{
		Name:     name,
		Note:     note,
		Settings: settings,
		Requests: res.Total.Requests,
		Failures: res.Total.Failures,
		Timeline: res.Timeline,
	}
}

// Failed returns the number of failed requests, all kinds together.
func (r Run) Failed() int64 { return r.Failures.Sum() }

// WriteFile writes runs to path as JSON, for [ReadFile] and the rollout
// command's -draw.
func WriteFile(path string, runs ...Run) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("report: %w", cerr)
		}
	}()
	enc := json.NewEncoder(f)
	enc.SetIndent("", " ")
	if err := enc.Encode(runs); err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	return nil
}

// ReadFile reads runs that WriteFile wrote.
func ReadFile(path string) ([]Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var runs []Run
	if err := json.Unmarshal(b, &runs); err != nil {
		return nil, fmt.Errorf("report: read %s: %w", path, err)
	}
	return runs, nil
}
