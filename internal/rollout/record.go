package rollout

import "github.com/lameduck/lameduck/lameducktest/record"

// Record returns the run as package record keeps it, named name with note
// (see [record.Run]): what lameducktest writes when a test fails, and what
// the rollout command writes and draws.
func (r *Result) Record(name, note string) record.Run {
	return record.Run{
		Name:     name,
		Note:     note,
		Settings: r.Config.recorded(),
		Requests: r.Total.Requests,
		Failures: r.Total.Failures,
		Timeline: r.Timeline,
	}
}

// recorded returns c, its defaults filled in, as a record keeps it: a lag
// or warm-up of none as zero. PodLog, a writer, is no setting to record.
func (c Config) recorded() record.Settings {
	return record.Settings{
		PodCommand:     c.Pod.Command,
		PodEnv:         c.Pod.Env,
		Rollouts:       c.Cycles,
		Replicas:       c.Replicas,
		Lag:            max(c.Lag, 0),
		Grace:          c.Grace,
		ProbePeriod:    c.ProbePeriod,
		ReadyPath:      c.ReadyPath,
		ReadyTimeout:   c.ReadyTimeout,
		Warmup:         max(c.Warmup, 0),
		Load:           string(c.Load),
		Conns:          c.Conns,
		WorkersPerConn: c.WorkersPerConn,
		Fresh:          c.Fresh,
		Late:           c.Late,
		Path:           c.Path,
		RequestTimeout: c.RequestTimeout,
		ListenAddr:     c.ListenAddr,
	}
}
