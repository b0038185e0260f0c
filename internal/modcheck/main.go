// Command modcheck proves that each module of this repository can be had
// the way a user gets it, and shows what each one brings.
//
// It lays out every module of the repository, as the working tree has it,
// in a module proxy on disk, at the version that the nested modules require
// the root module at: the version they are all tagged with together, as a
// release publishes them. Then, in new modules outside the repository, with
// GOWORK=off and that proxy ahead of the usual one, it gets lameduck with
// the lines of the README's install section, and builds and tests four
// services whose tests check their rolling update with lameducktest: one
// HTTP only, one gRPC, one HTTP with Prometheus metrics, one HTTP with
// OpenTelemetry. It also draws a
// recorded rollout with go run github.com/lameduck/lameduck/cmd/rollout@latest,
// as lameducktest tells a user to.
//
// For each service it reports `go list -m all` and the packages of its test
// binary (`go list -deps -test`), and it fails if a dependency reached a
// service that does not import the package that needs it: no gRPC,
// protobuf, Prometheus or plotting package in the HTTP service's test
// binary, no plotting anywhere but the command, and so on. A nested module
// with a requirement that only a replace directive could satisfy fails the
// go get.
//
// It also runs go mod tidy on a copy of every module against the laid-out
// proxy, and fails if a go.mod or go.sum is not what tidy makes of it. In
// the repository go mod tidy and go get cannot do that in a nested module:
// they ignore go.work, and the version of the root module that the nested
// modules require is published only when they are. With -tidy, modcheck
// writes the tidied files instead, and does nothing else: run it after
// changing what a module imports. The go.sum lines of the repository's own
// modules are left out, being the working tree's, not the release's.
//
// Usage:
//
//	go run ./internal/modcheck [-o report.md] [-keep]
//	go run ./internal/modcheck -tidy
//
// It runs from anywhere in the repository. It needs the go command and a
// module proxy for third-party modules (GOPROXY, as go env reports it);
// modules already in the module cache are read from there first, so a
// second run needs no network. The report (Markdown) goes to standard
// output, or to -o; the exit status is 1 if a check failed.
package main

import (
	"archive/zip"
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// rootModule is the repository's root module; every module of the
// repository has a path under it.
const rootModule = "github.com/lameduck/lameduck"

// consumers holds the services' sources, one directory each; their go.mod
// files are written by [consumer.run].
//
//go:embed testdata
var consumers embed.FS

// A consumer is a service built outside the repository.
type consumer struct {
	// name is its directory in testdata, and the last element of its
	// module path.
	name, title string
	// get are the modules it gets, as the README's install section says.
	get []string
	// need are prefixes of packages its test binary must contain.
	need []string
	// noModules are prefixes of modules its module graph must not have:
	// the dependencies that a module of lameduck it does not require
	// brings. (The module graph also holds modules that only other
	// modules' tests need, such as yaml.v3 for testify, or gonum for
	// grpc's: those reach go.sum, not the build.)
	noModules []string
	// noPackages are prefixes of packages its test binary must not
	// compile.
	noPackages []string
}

// The modules of lameduck that bring dependencies, and what they bring.
var (
	grpcModules = []string{rootModule + "/grpcserver", "google.golang.org/grpc"}
	promModules = []string{rootModule + "/prommetrics", "github.com/prometheus/client_golang"}
	otelModules = []string{rootModule + "/otellameduck"}
	toolModules = []string{rootModule + "/cmd/rollout", rootModule + "/examples/", "gonum.org/v1/plot", "golang.org/x/image"}
	// The websocket libraries of examples/realtime, which no module of
	// lameduck requires: a service gets one only by choosing it.
	wsModules = []string{"github.com/coder/websocket", "github.com/gorilla/websocket"}

	grpcPackages  = []string{"google.golang.org/grpc", "google.golang.org/genproto", rootModule + "/grpcserver"}
	protoPackages = []string{"google.golang.org/protobuf"}
	promPackages  = []string{"github.com/prometheus/", rootModule + "/prommetrics"}
	otelPackages  = []string{"go.opentelemetry.io/", rootModule + "/otellameduck"}
	plotPackages  = []string{"gonum.org/", "golang.org/x/image", "codeberg.org/", "git.sr.ht/", rootModule + "/cmd/rollout"}
	// The test libraries of lameduck's own tests, and what they bring.
	testPackages = []string{"github.com/stretchr/testify", "go.uber.org/goleak", "gopkg.in/yaml.v3"}
)

var services = []consumer{
	{
		name: "http", title: "HTTP only",
		get:        []string{rootModule},
		need:       []string{rootModule + "/httpserver", rootModule + "/lameducktest"},
		noModules:  slices.Concat(wsModules, grpcModules, promModules, otelModules, toolModules, []string{"google.golang.org/protobuf", "go.opentelemetry.io/"}),
		noPackages: slices.Concat(grpcPackages, protoPackages, promPackages, otelPackages, plotPackages, testPackages),
	},
	{
		name: "grpc", title: "gRPC",
		get:        []string{rootModule, rootModule + "/grpcserver"},
		need:       []string{rootModule + "/grpcserver", rootModule + "/grpcserver/grpcload", "google.golang.org/grpc"},
		noModules:  slices.Concat(wsModules, promModules, otelModules, toolModules),
		noPackages: slices.Concat(promPackages, otelPackages, plotPackages, testPackages),
	},
	{
		name: "metrics", title: "HTTP with Prometheus metrics",
		get:        []string{rootModule, rootModule + "/prommetrics"},
		need:       []string{rootModule + "/prommetrics", "github.com/prometheus/client_golang/prometheus"},
		noModules:  slices.Concat(wsModules, grpcModules, otelModules, toolModules),
		noPackages: slices.Concat(grpcPackages, otelPackages, plotPackages, testPackages),
	},
	{
		name: "otel", title: "HTTP with OpenTelemetry",
		get:        []string{rootModule, rootModule + "/otellameduck"},
		need:       []string{rootModule + "/otellameduck", "go.opentelemetry.io/otel/sdk/metric", "go.opentelemetry.io/otel/sdk/trace"},
		noModules:  slices.Concat(wsModules, grpcModules, promModules, toolModules, []string{"google.golang.org/protobuf"}),
		noPackages: slices.Concat(grpcPackages, protoPackages, promPackages, plotPackages, testPackages),
	},
}

func main() {
	out := flag.String("o", "", "write the report to this `file` instead of standard output")
	keep := flag.Bool("keep", false, "keep the proxy, module cache and services in the temporary directory, and say where")
	write := flag.Bool("tidy", false, "tidy every module's go.mod and go.sum against the laid-out modules, and do nothing else")
	flag.Parse()
	if err := run(*out, *keep, *write); err != nil {
		fmt.Fprintln(os.Stderr, "modcheck:", err)
		os.Exit(1)
	}
}

func run(out string, keep, write bool) (err error) {
	repo, err := repoRoot()
	if err != nil {
		return err
	}
	mods, err := findModules(repo)
	if err != nil {
		return err
	}
	version, err := releaseVersion(mods)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "modcheck-")
	if err != nil {
		return err
	}
	if keep {
		defer fmt.Fprintln(os.Stderr, "modcheck: kept", work)
	} else {
		defer os.RemoveAll(work) // the module cache is writable: -modcacherw
	}
	proxy := filepath.Join(work, "proxy")
	files, err := trackedFiles(repo)
	if err != nil {
		return err
	}
	for _, m := range mods {
		if err := publish(proxy, repo, m, version, moduleFiles(m, mods, files)); err != nil {
			return err
		}
	}
	env, err := consumerEnv(work, proxy)
	if err != nil {
		return err
	}
	untidy, err := tidy(filepath.Join(work, "tidy"), repo, mods, files, env, write)
	if err != nil {
		return err
	}
	if write {
		fmt.Fprintf(os.Stderr, "modcheck: tidied %d of %d modules\n", len(untidy), len(mods))
		return nil
	}

	r := &report{version: version, mods: mods, untidy: untidy}
	for _, c := range services {
		r.results = append(r.results, c.run(filepath.Join(work, c.name), env))
	}
	r.tool = drawWithCommand(work, env, filepath.Join(repo, "cmd/rollout/internal/picture/testdata/compare.json"))

	w := io.Writer(os.Stdout)
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}()
		w = f
	}
	r.write(w)
	if failed := r.failed(); len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, "; "))
	}
	fmt.Fprintf(os.Stderr, "modcheck: %d services and the rollout command got every module of lameduck %s as a user would; every check passed\n", len(services), version)
	return nil
}

// repoRoot returns the directory of the repository's go.work.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOWORK: %w", err)
	}
	work := strings.TrimSpace(string(out))
	if work == "" || work == "off" {
		return "", errors.New("run from inside the repository, without GOWORK=off: its go.work names the modules")
	}
	return filepath.Dir(work), nil
}

// A module is one module of the repository.
type module struct {
	Path string
	Dir  string // relative to the repository, with slashes; "." for the root
	// GoMod is the go.mod file's content.
	GoMod []byte
	// Requires maps the other modules of the repository that it requires
	// to their versions.
	Requires map[string]string
}

// findModules returns the modules of the repository that go.work uses,
// root first.
func findModules(repo string) ([]module, error) {
	out, err := exec.Command("go", "work", "edit", "-json", filepath.Join(repo, "go.work")).Output()
	if err != nil {
		return nil, fmt.Errorf("go work edit -json: %w", err)
	}
	var work struct{ Use []struct{ DiskPath string } }
	if err := json.Unmarshal(out, &work); err != nil {
		return nil, err
	}
	var mods []module
	for _, u := range work.Use {
		dir := path.Clean(filepath.ToSlash(u.DiskPath))
		gomod := filepath.Join(repo, filepath.FromSlash(dir), "go.mod")
		out, err := exec.Command("go", "mod", "edit", "-json", gomod).Output()
		if err != nil {
			return nil, fmt.Errorf("go mod edit -json %s: %w", gomod, err)
		}
		var mf struct {
			Module  struct{ Path string }
			Require []struct{ Path, Version string }
			Replace []struct{ Old struct{ Path string } }
		}
		if err := json.Unmarshal(out, &mf); err != nil {
			return nil, fmt.Errorf("%s: %w", gomod, err)
		}
		if len(mf.Replace) > 0 {
			return nil, fmt.Errorf("%s replaces %s: a user's build ignores replace directives, so the module must not need one", gomod, mf.Replace[0].Old.Path)
		}
		m := module{Path: mf.Module.Path, Dir: dir, Requires: map[string]string{}}
		if m.GoMod, err = os.ReadFile(gomod); err != nil {
			return nil, err
		}
		for _, r := range mf.Require {
			if r.Path == rootModule || strings.HasPrefix(r.Path, rootModule+"/") {
				m.Requires[r.Path] = r.Version
			}
		}
		mods = append(mods, m)
	}
	slices.SortFunc(mods, func(a, b module) int { return strings.Compare(a.Dir, b.Dir) })
	if len(mods) == 0 || mods[0].Path != rootModule || mods[0].Dir != "." {
		return nil, fmt.Errorf("go.work must use the root module, %s, as its directory \".\"", rootModule)
	}
	return mods, nil
}

// releaseVersion returns the version every nested module requires the
// other modules of the repository at, which is the version they are
// released with.
func releaseVersion(mods []module) (string, error) {
	version := ""
	for _, m := range mods {
		for dep, v := range m.Requires {
			if version == "" {
				version = v
			}
			if v != version {
				return "", fmt.Errorf("%s requires %s %s, but another module requires %s: the modules are released together, at one version", m.Path, dep, v, version)
			}
		}
	}
	if version == "" {
		return "", errors.New("no nested module requires the root module")
	}
	return version, nil
}

// trackedFiles lists the files of the repository that a release would
// publish: those git tracks, and new ones it does not ignore, relative to
// the repository, with slashes.
func trackedFiles(repo string) ([]string, error) {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files: %w", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" {
			continue
		}
		// Deleted from the working tree, or a symbolic link, which module
		// zips do not hold.
		if fi, err := os.Lstat(filepath.Join(repo, filepath.FromSlash(f))); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		files = append(files, f)
	}
	return files, nil
}

// moduleFiles returns the files of m: those under its directory but not
// under a nested module's, relative to the repository.
func moduleFiles(m module, mods []module, files []string) []string {
	under := func(f, dir string) bool { return dir == "." || strings.HasPrefix(f, dir+"/") }
	var own []string
	for _, f := range files {
		if !under(f, m.Dir) {
			continue
		}
		nested := false
		for _, n := range mods {
			if n.Dir != m.Dir && under(n.Dir+"/", m.Dir) && under(f, n.Dir) {
				nested = true
				break
			}
		}
		if !nested {
			own = append(own, f)
		}
	}
	return own
}

// publish lays out m at version in the module proxy at dir, as the go
// command reads a GOPROXY=file:// one: list, .info, .mod and .zip. files
// are m's, relative to the repository repo.
func publish(dir, repo string, m module, version string, files []string) error {
	at := filepath.Join(dir, filepath.FromSlash(escapePath(m.Path)), "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		return err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(at, "list"), []byte(version+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(at, version+".info"), info, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(at, version+".mod"), m.GoMod, 0o644); err != nil {
		return err
	}
	zf, err := os.Create(filepath.Join(at, version+".zip"))
	if err != nil {
		return err
	}
	defer zf.Close()
	if err := writeZip(zf, os.DirFS(repo), m, version, files); err != nil {
		return fmt.Errorf("zip of %s: %w", m.Path, err)
	}
	return zf.Close()
}

// writeZip writes the module zip of m: each of its files, read from repo,
// under module@version/, with its path relative to the module's directory.
func writeZip(w io.Writer, repo fs.FS, m module, version string, files []string) error {
	zw := zip.NewWriter(w)
	prefix := m.Path + "@" + version + "/"
	for _, f := range files {
		rel := f
		if m.Dir != "." {
			rel = strings.TrimPrefix(f, m.Dir+"/")
		}
		content, err := fs.ReadFile(repo, f)
		if err != nil {
			return err
		}
		fw, err := zw.Create(prefix + rel)
		if err != nil {
			return err
		}
		if _, err := fw.Write(content); err != nil {
			return err
		}
	}
	return zw.Close()
}

// escapePath escapes a module path as the module proxy protocol does: each
// upper-case letter becomes an exclamation mark and the letter in lower
// case, so that paths differing in case stay apart on any file system.
func escapePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// consumerEnv returns the environment of the go commands run in the
// services: no workspace, the laid-out proxy first, then the module cache
// already on the machine (read as a proxy), then the usual proxy; a module
// cache of its own, so that the laid-out versions never enter the real one.
func consumerEnv(work, proxy string) ([]string, error) {
	goenv := func(name string) (string, error) {
		out, err := exec.Command("go", "env", name).Output()
		return strings.TrimSpace(string(out)), err
	}
	upstream, err := goenv("GOPROXY")
	if err != nil {
		return nil, err
	}
	proxies := []string{"file://" + filepath.ToSlash(proxy)}
	if cache, err := goenv("GOMODCACHE"); err == nil && cache != "" {
		if fi, err := os.Stat(filepath.Join(cache, "cache", "download")); err == nil && fi.IsDir() {
			proxies = append(proxies, "file://"+filepath.ToSlash(filepath.Join(cache, "cache", "download")))
		}
	}
	if upstream != "" && upstream != "off" {
		proxies = append(proxies, upstream)
	}
	flags, err := goenv("GOFLAGS")
	if err != nil {
		return nil, err
	}
	return append(os.Environ(),
		"GOWORK=off",
		"GOTOOLCHAIN=local",
		// -trimpath: the module cache is a new directory each time, and
		// its path would otherwise be part of every build's cache key.
		"GOFLAGS="+strings.TrimSpace(flags+" -mod=mod -modcacherw -trimpath"),
		"GOPROXY="+strings.Join(proxies, ","),
		// The laid-out modules are not the published ones: the checksum
		// database must not be asked about them. Every other module is
		// checked as usual.
		"GONOSUMDB="+rootModule,
		"GOMODCACHE="+filepath.Join(work, "modcache"),
	), nil
}

// A result is what a consumer's run showed.
type result struct {
	consumer
	// steps are the commands run, in order, with the first one that
	// failed last.
	steps []step
	// modules is go list -m all; packages is go list -deps -test, with
	// standard counting the standard library's among them.
	modules, packages []string
	standard          int
	// problems are the checks that failed.
	problems []string
}

// A step is one go command and its output.
type step struct {
	args []string
	out  string
	err  error
	took time.Duration
}

// gocmd runs go with args in dir.
func gocmd(dir string, env []string, args ...string) step {
	cmd := exec.Command("go", args...)
	cmd.Dir, cmd.Env = dir, env
	start := time.Now()
	out, err := cmd.CombinedOutput()
	return step{args: args, out: string(out), err: err, took: time.Since(start)}
}

// progress says on standard error what a step did, for the log of CI.
func progress(name string, s step) {
	verdict := "ok"
	if s.err != nil {
		verdict = s.err.Error()
	}
	fmt.Fprintf(os.Stderr, "modcheck: %s: go %s: %s (%s)\n", name, strings.Join(s.args, " "), verdict, s.took.Round(100*time.Millisecond))
}

// run writes the consumer's module to dir, gets lameduck, builds and tests
// it, and lists its modules and test binary's packages.
func (c consumer) run(dir string, env []string) result {
	r := result{consumer: c}
	fail := func(format string, args ...any) result {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
		return r
	}
	if err := writeConsumer(dir, c.name); err != nil {
		return fail("%v", err)
	}
	do := func(args ...string) bool {
		s := gocmd(dir, env, args...)
		progress(c.name, s)
		r.steps = append(r.steps, s)
		if s.err != nil {
			r.problems = append(r.problems, fmt.Sprintf("go %s: %v", strings.Join(args, " "), s.err))
		}
		return s.err == nil
	}
	for _, m := range c.get {
		if !do("get", m+"@latest") {
			return r
		}
	}
	if !do("mod", "tidy") || !do("build", "./...") || !do("test", "-count=1", "./...") {
		return r
	}
	s := gocmd(dir, env, "list", "-m", "all")
	if s.err != nil {
		r.steps = append(r.steps, s)
		return fail("go list -m all: %v", s.err)
	}
	r.modules = splitLines(s.out)
	s = gocmd(dir, env, "list", "-deps", "-test", "-f", "{{.Standard}} {{.ImportPath}}", ".")
	if s.err != nil {
		r.steps = append(r.steps, s)
		return fail("go list -deps -test: %v", s.err)
	}
	for _, line := range splitLines(s.out) {
		std, pkg, _ := strings.Cut(line, " ")
		if std == "true" {
			r.standard++
			continue
		}
		r.packages = append(r.packages, pkg)
	}
	slices.Sort(r.packages)
	r.check()
	return r
}

// check records what the consumer must have and must not.
func (r *result) check() {
	has := func(list []string, prefix string) string {
		for _, s := range list {
			if under(s, prefix) {
				return s
			}
		}
		return ""
	}
	for _, p := range r.need {
		if has(r.packages, p) == "" {
			r.problems = append(r.problems, fmt.Sprintf("its test binary lacks %s", p))
		}
	}
	for _, p := range r.noModules {
		if s := has(r.modules, p); s != "" {
			r.problems = append(r.problems, fmt.Sprintf("its module graph has %s", s))
		}
	}
	for _, p := range r.noPackages {
		if s := has(r.packages, p); s != "" {
			r.problems = append(r.problems, fmt.Sprintf("its test binary compiles %s", s))
		}
	}
}

// under reports whether s, a package path or a line of go list -m ("path
// version"), is prefix or under it; a prefix that ends in "/" is under
// every path it begins.
func under(s, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(s, prefix)
	}
	rest, ok := strings.CutPrefix(s, prefix)
	return ok && (rest == "" || rest[0] == '/' || rest[0] == ' ')
}

// writeConsumer writes the module of the consumer named name to dir.
func writeConsumer(dir, name string) error {
	src, err := fs.Sub(consumers, "testdata/"+name)
	if err != nil {
		return err
	}
	if err := os.CopyFS(dir, src); err != nil {
		return err
	}
	gomod := fmt.Sprintf("module example.com/%s\n\ngo 1.24.0\n", name)
	return os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644)
}

// drawWithCommand draws the recorded comparison with the rollout command
// fetched as a user fetches it, outside any module.
func drawWithCommand(work string, env []string, recorded string) result {
	r := result{consumer: consumer{name: "rollout", title: "the rollout command"}}
	svg := filepath.Join(work, "rollout.svg")
	s := gocmd(work, env, "run", rootModule+"/cmd/rollout@latest", "-draw", recorded, "-report", svg)
	s.args = []string{"run", rootModule + "/cmd/rollout@latest", "-draw", "compare.json", "-report", "rollout.svg"}
	progress(r.name, s)
	r.steps = append(r.steps, s)
	if s.err != nil {
		r.problems = append(r.problems, fmt.Sprintf("go run .../cmd/rollout@latest -draw: %v", s.err))
		return r
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("<svg")) {
		r.problems = append(r.problems, "go run .../cmd/rollout@latest -draw wrote no SVG")
	}
	return r
}

func splitLines(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// tidy runs go mod tidy on a copy in dir of each module, with env, and
// returns the modules whose go.mod or go.sum it changed, leaving out the
// go.sum lines of the repository's own modules. With write, it writes the
// tidied files into the repository.
func tidy(dir, repo string, mods []module, files []string, env []string, write bool) (untidy []string, err error) {
	for _, m := range mods {
		copyDir := filepath.Join(dir, filepath.FromSlash(m.Dir))
		for _, f := range moduleFiles(m, mods, files) {
			content, err := os.ReadFile(filepath.Join(repo, filepath.FromSlash(f)))
			if err != nil {
				return nil, err
			}
			rel := f
			if m.Dir != "." {
				rel = strings.TrimPrefix(f, m.Dir+"/")
			}
			to := filepath.Join(copyDir, filepath.FromSlash(rel))
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(to, content, 0o644); err != nil {
				return nil, err
			}
		}
		s := gocmd(copyDir, env, "mod", "tidy")
		progress("tidy "+m.Path, s)
		if s.err != nil {
			return nil, fmt.Errorf("go mod tidy in %s: %v\n%s", m.Path, s.err, s.out)
		}
		changed := false
		for _, name := range []string{"go.mod", "go.sum"} {
			tidied, err := os.ReadFile(filepath.Join(copyDir, name))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			if name == "go.sum" {
				tidied = withoutOwnSums(tidied)
			}
			path := filepath.Join(repo, filepath.FromSlash(m.Dir), name)
			was, err := os.ReadFile(path)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			if bytes.Equal(was, tidied) {
				continue
			}
			changed = true
			if write {
				if err := os.WriteFile(path, tidied, 0o644); err != nil {
					return nil, err
				}
			}
		}
		if changed {
			untidy = append(untidy, m.Path)
		}
	}
	return untidy, nil
}

// withoutOwnSums returns go.sum content without the lines of the
// repository's own modules.
func withoutOwnSums(sum []byte) []byte {
	var b bytes.Buffer
	for line := range strings.Lines(string(sum)) {
		if path, _, _ := strings.Cut(line, " "); path == rootModule || strings.HasPrefix(path, rootModule+"/") {
			continue
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

// A report is the outcome of a run.
type report struct {
	version string
	mods    []module
	// untidy are the modules whose go.mod or go.sum go mod tidy changes.
	untidy  []string
	results []result
	tool    result
}

// failed returns the checks that failed, each prefixed by its consumer.
func (r *report) failed() []string {
	var failed []string
	for _, m := range r.untidy {
		failed = append(failed, m+": go.mod or go.sum is not tidy; run go run ./internal/modcheck -tidy")
	}
	for _, res := range append(slices.Clone(r.results), r.tool) {
		for _, p := range res.problems {
			failed = append(failed, res.name+": "+p)
		}
	}
	return failed
}

// write writes the report in Markdown.
func (r *report) write(w io.Writer) {
	goVersion := gocmd("", nil, "env", "GOVERSION")
	fmt.Fprintf(w, "Modules laid out at %s from the working tree (%s):\n\n", r.version, strings.TrimSpace(goVersion.out))
	fmt.Fprintf(w, "| module | requires of the repository | go mod tidy |\n| --- | --- | --- |\n")
	for _, m := range r.mods {
		var reqs []string
		for p, v := range m.Requires {
			reqs = append(reqs, strings.TrimPrefix(p, rootModule+"/")+" "+v)
		}
		slices.Sort(reqs)
		tidy := "tidy"
		if slices.Contains(r.untidy, m.Path) {
			tidy = "**not tidy**"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", m.Path, strings.Join(reqs, ", "), tidy)
	}
	fmt.Fprintf(w, "\n| service | modules (`go list -m all`) | test binary packages (`go list -deps -test`) | standard library | others | checks |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, res := range r.results {
		verdict := "pass"
		if len(res.problems) > 0 {
			verdict = "**FAIL**"
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %s |\n", res.title, len(res.modules), res.standard+len(res.packages), res.standard, len(res.packages), verdict)
	}
	for _, res := range append(slices.Clone(r.results), r.tool) {
		fmt.Fprintf(w, "\n### %s\n\n```sh\n", res.title)
		for _, s := range res.steps {
			fmt.Fprintf(w, "go %s\n", strings.Join(s.args, " "))
		}
		fmt.Fprintf(w, "```\n")
		for _, p := range res.problems {
			fmt.Fprintf(w, "\n**FAIL**: %s\n", p)
		}
		if n := len(res.steps); n > 0 && res.steps[n-1].err != nil {
			fmt.Fprintf(w, "\n```\n%s\n```\n", strings.TrimSpace(res.steps[n-1].out))
		}
		if len(res.modules) > 0 {
			fmt.Fprintf(w, "\n`go list -m all`, %d modules:\n\n```\n%s\n```\n", len(res.modules), strings.Join(res.modules, "\n"))
		}
		if len(res.packages) > 0 {
			fmt.Fprintf(w, "\n`go list -deps -test .`: %d packages, %d of the standard library and these %d:\n\n```\n%s\n```\n",
				res.standard+len(res.packages), res.standard, len(res.packages), strings.Join(res.packages, "\n"))
		}
	}
}
