package main

import (
	"archive/zip"
	"bytes"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testModules = []module{
	{Path: rootModule, Dir: "."},
	{Path: rootModule + "/cmd/rollout", Dir: "cmd/rollout", Requires: map[string]string{rootModule: "v0.1.0", rootModule + "/grpcserver": "v0.1.0"}},
	{Path: rootModule + "/grpcserver", Dir: "grpcserver", Requires: map[string]string{rootModule: "v0.1.0"}},
}

// A module's files are those under its directory and not under a nested
// module's, as in a module zip.
func TestModuleFiles(t *testing.T) {
	files := []string{"go.mod", "doc.go", "cmd/other/main.go", "cmd/rollout/go.mod", "cmd/rollout/main.go",
		"cmd/rollout/internal/picture/draw.go", "grpcserver/go.mod", "grpcserver/grpcload/grpcload.go", "grpcserverx/x.go"}
	assert.Equal(t, []string{"go.mod", "doc.go", "cmd/other/main.go", "grpcserverx/x.go"}, moduleFiles(testModules[0], testModules, files))
	assert.Equal(t, []string{"cmd/rollout/go.mod", "cmd/rollout/main.go", "cmd/rollout/internal/picture/draw.go"}, moduleFiles(testModules[1], testModules, files))
	assert.Equal(t, []string{"grpcserver/go.mod", "grpcserver/grpcload/grpcload.go"}, moduleFiles(testModules[2], testModules, files))
}

// The zip holds each file under module@version/, relative to the module.
func TestWriteZip(t *testing.T) {
	repo := fstest.MapFS{
		"grpcserver/go.mod":               {Data: []byte("module " + rootModule + "/grpcserver\n")},
		"grpcserver/grpcload/grpcload.go": {Data: []byte("package grpcload\n")},
	}
	var b bytes.Buffer
	require.NoError(t, writeZip(&b, repo, testModules[2], "v0.1.0", []string{"grpcserver/go.mod", "grpcserver/grpcload/grpcload.go"}))
	zr, err := zip.NewReader(bytes.NewReader(b.Bytes()), int64(b.Len()))
	require.NoError(t, err)
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	prefix := rootModule + "/grpcserver@v0.1.0/"
	assert.Equal(t, []string{prefix + "go.mod", prefix + "grpcload/grpcload.go"}, names)
}

func TestReleaseVersion(t *testing.T) {
	v, err := releaseVersion(testModules)
	require.NoError(t, err)
	assert.Equal(t, "v0.1.0", v)
	skewed := append(testModules[:2:2], module{Path: rootModule + "/prommetrics", Requires: map[string]string{rootModule: "v0.0.0-00010101000000-000000000000"}})
	_, err = releaseVersion(skewed)
	assert.ErrorContains(t, err, "released together")
	_, err = releaseVersion(testModules[:1])
	assert.ErrorContains(t, err, "no nested module")
}

func TestEscapePath(t *testing.T) {
	assert.Equal(t, "github.com/!burnt!sushi/toml", escapePath("github.com/BurntSushi/toml"))
	assert.Equal(t, rootModule, escapePath(rootModule))
}

func TestUnder(t *testing.T) {
	for _, tt := range []struct {
		s, prefix string
		want      bool
	}{
		{"google.golang.org/grpc", "google.golang.org/grpc", true},
		{"google.golang.org/grpc/codes", "google.golang.org/grpc", true},
		{"google.golang.org/grpc v1.80.0", "google.golang.org/grpc", true},
		{"google.golang.org/grpcx", "google.golang.org/grpc", false},
		{"gonum.org/v1/plot", "gonum.org/", true},
		{rootModule + "/grpcserverx", rootModule + "/grpcserver", false},
	} {
		assert.Equal(t, tt.want, under(tt.s, tt.prefix), "under(%q, %q)", tt.s, tt.prefix)
	}
}

// The go.sum lines of the repository's own modules hash the working tree,
// not the release, and stay out of go.sum.
func TestWithoutOwnSums(t *testing.T) {
	sum := rootModule + " v0.1.0 h1:x=\n" +
		rootModule + " v0.1.0/go.mod h1:y=\n" +
		rootModule + "/grpcserver v0.1.0/go.mod h1:z=\n" +
		"google.golang.org/grpc v1.80.0 h1:a=\n" +
		rootModule + "x v1.0.0 h1:b=\n"
	assert.Equal(t, "google.golang.org/grpc v1.80.0 h1:a=\n"+rootModule+"x v1.0.0 h1:b=\n", string(withoutOwnSums([]byte(sum))))
}
