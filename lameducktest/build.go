package lameducktest

import (
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// Build compiles the main package pkg with go build and returns the path of
// the binary, in a directory of t.TempDir(). pkg is what go build takes: a
// directory relative to the test's package, such as "./cmd/myserver", or an
// import path. buildFlags go before it, such as "-race" (to catch data
// races of the shutdown under load, at the cost of a slower build and
// server) or "-tags=integration".
//
// Build calls t.Fatalf with the compiler's output if the build fails. It
// runs the go command found on PATH, where go test puts the one running the
// test.
func Build(t testing.TB, pkg string, buildFlags ...string) string {
	t.Helper()
	for _, f := range buildFlags {
		if f == "-o" || strings.HasPrefix(f, "-o=") {
			t.Fatalf("lameducktest: Build(%q): drop %s from the build flags: Build chooses where the binary goes and returns its path", pkg, f)
			return ""
		}
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("lameducktest: Build(%q): cannot find the go command: %v; run the test with go test, which puts its go command on PATH, or add it to PATH", pkg, err)
		return ""
	}
	bin := filepath.Join(t.TempDir(), binaryName(pkg))
	args := append([]string{"build", "-o", bin}, buildFlags...)
	cmd := exec.Command(goTool, append(args, pkg)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("lameducktest: Build(%q): go %s: %v\n%s", pkg, strings.Join(cmd.Args[1:], " "), err, strings.TrimSpace(string(out)))
		return ""
	}
	return bin
}

// binaryName names the binary of pkg as go build would, or "server" when
// pkg's last element says nothing ("." or "..").
func binaryName(pkg string) string {
	name := path.Base(filepath.ToSlash(strings.TrimRight(pkg, `/\`)))
	if name == "." || name == ".." || name == "/" || name == "" {
		name = "server"
	}
	return name
}
