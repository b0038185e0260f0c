package lameducktest

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// drawCommand is how a user draws a recorded rolling update: the rollout
// command, whose module brings the plotting library, so that this package
// brings none to the tests that use it.
const drawCommand = "go run github.com/lameduck/lameduck/cmd/rollout@latest -draw"

// drawRollout records res, the run of a failed test, for a picture, and
// logs where the record is and how to draw it.
func drawRollout(t testing.TB, rc rollout.Config, res *rollout.Result) {
	t.Helper()
	if res.Timeline.LoadEnd <= 0 {
		return // the run failed before any load: nothing happened to draw
	}
	dir, err := pictureDir(t)
	if err != nil {
		t.Logf("lameducktest: no record of the rolling update: %v", err)
		return
	}
	path, err := freeName(dir, "rollout", ".json")
	if err == nil {
		err = record.WriteFile(path, res.Record(filepath.Base(rc.Pod.Command[0]), t.Name()))
	}
	if err != nil {
		t.Logf("lameducktest: no record of the rolling update: %v", err)
		return
	}
	t.Logf("lameducktest: the rolling update, recorded for a picture: %s\n\tdraw it with: %s %s -report %s",
		path, drawCommand, path, strings.TrimSuffix(path, ".json")+".png")
}

// pictureDir returns the test's artifact directory if go test was asked to
// keep artifacts (-artifacts, Go 1.26 and later), or else a new temporary
// directory. Without -artifacts, testing's ArtifactDir is a temporary
// directory removed at the end of the test, before anyone could look.
func pictureDir(t testing.TB) (string, error) {
	if a, ok := t.(interface{ ArtifactDir() string }); ok && keepsArtifacts() {
		return a.ArtifactDir(), nil
	}
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == os.PathSeparator || r < ' ' {
			return '_'
		}
		return r
	}, t.Name())
	return os.MkdirTemp("", "lameducktest-"+name+"-")
}

// keepsArtifacts reports whether go test runs with -artifacts.
func keepsArtifacts() bool {
	f := flag.Lookup("test.artifacts")
	return f != nil && f.Value.String() == "true"
}

// freeName returns dir/base+ext, or dir/base-2+ext and so on if that is
// taken: a test may run several rolling updates.
func freeName(dir, base, ext string) (string, error) {
	for i := 1; i <= 100; i++ {
		name := base + ext
		if i > 1 {
			name = fmt.Sprintf("%s-%d%s", base, i, ext)
		}
		path := filepath.Join(dir, name)
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return path, nil
		}
	}
	return "", fmt.Errorf("%s already holds 100 records", dir)
}
