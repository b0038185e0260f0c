package main_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck/internal/await"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait, so that a bug fails a test instead of
// hanging the suite.
const waitTimeout = 10 * time.Second

// TestCommand builds the command and runs it as Kubernetes would, checking
// its contract from outside: flags, exit status, health and probes.
func TestCommand(t *testing.T) {
	bin := build(t)

	t.Run("health, probes and a stream across SIGTERM", func(t *testing.T) {
		t.Parallel()
		p := start(t, bin, "-drain-delay", "1s", "-grace-period", "10s", "-init-delay", "1s")
		cc := dial(t, p.grpcAddr)
		client := testpb.NewTestServiceClient(cc)

		// Starting: the init delay leaves the test ample time to look.
		w := watch(t, cc, "")
		assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, w.next(t), "Watch before the init delay passed")
		assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(t, cc, "grpc.testing.TestService"))
		assert.Equal(t, http.StatusServiceUnavailable, p.probe(t, "/readyz"))
		assert.Equal(t, http.StatusOK, p.probe(t, "/livez"))

		// Ready.
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, w.next(t), "Watch once ready")
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, check(t, cc, "grpc.testing.TestService"))
		assert.Equal(t, http.StatusOK, p.probe(t, "/readyz"))
		resp, err := client.UnaryCall(ctx(t), &testpb.SimpleRequest{ResponseSize: 100})
		require.NoError(t, err)
		assert.Len(t, resp.GetPayload().GetBody(), 100, "UnaryCall honours response_size")
		stream, err := client.StreamingOutputCall(ctx(t), &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 1}, {Size: 2, IntervalUs: 10_000_000}},
		})
		require.NoError(t, err)
		first, err := stream.Recv()
		require.NoError(t, err)
		assert.Len(t, first.GetPayload().GetBody(), 1)

		// SIGTERM: health and /readyz flip together, everything is served.
		p.signal(t, syscall.SIGTERM)
		assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, w.next(t), "Watch at the signal")
		assert.Equal(t, http.StatusServiceUnavailable, p.probe(t, "/readyz"))
		assert.Equal(t, http.StatusOK, p.probe(t, "/livez"), "liveness holds through the drain")
		for i := range 5 {
			_, err := client.EmptyCall(ctx(t), &testpb.Empty{})
			require.NoError(t, err, "RPC %d during the delay", i)
		}
		_, err = testpb.NewTestServiceClient(dial(t, p.grpcAddr)).EmptyCall(ctx(t), &testpb.Empty{})
		require.NoError(t, err, "a new connection during the delay")

		// Drain: the Watch ends, the stream leaves at its turn, long
		// before its second response, telling its client to reconnect for
		// the rest, and the process exits as soon as it has.
		_, watchErr := w.recv()
		assert.True(t, errors.Is(watchErr, io.EOF), "the Watch ends when the drain begins, got %v", watchErr)
		_, err = stream.Recv()
		assert.Equal(t, codes.Unavailable, status.Code(err), "the stream leaves with UNAVAILABLE: %v", err)
		assert.Contains(t, status.Convert(err).Message(), "after 1 of 2 responses; reconnect for the rest")
		streamEnd := time.Now()
		assert.Equal(t, 0, p.wait(t), "exit status after a clean drain; stderr:\n%s", p.stderr())
		t.Logf("exited %v after the last stream ended", p.exitedAt.Sub(streamEnd))
		assert.Less(t, p.exitedAt.Sub(streamEnd), time.Second, "the process exits right after its last stream")
		assert.Contains(t, p.stderr(), "cut=nothing")
		assert.Contains(t, p.stderr(), "departures.told=1", "the stream was told to leave")
	})

	t.Run("an upload cut at the deadline exits 1", func(t *testing.T) {
		t.Parallel()
		// No delay: the drain is cut 6s - 2s of safety margin - 3s kept
		// for closing = 1s after the signal. A client stream takes no
		// turn to leave: one its client never closes is cut.
		p := start(t, bin, "-drain-delay", "0s", "-grace-period", "6s")
		upload := endlessUpload(t, p)
		p.signal(t, syscall.SIGTERM)
		assert.Equal(t, 1, p.wait(t))
		assert.Contains(t, p.stderr(), "the drain deadline passed: 1 stream cut")
		_, err := upload.CloseAndRecv()
		assert.Equal(t, codes.Unavailable, status.Code(err), "the client learns its stream was cut: %v", err)
	})

	t.Run("a second signal cuts at once and exits 1", func(t *testing.T) {
		t.Parallel()
		p := start(t, bin)
		endlessStream(t, p)
		p.signal(t, syscall.SIGTERM)
		p.awaitLine(t, "lameduck: lame duck")
		p.signal(t, syscall.SIGINT)
		assert.Equal(t, 1, p.wait(t))
		assert.Contains(t, p.stderr(), "a second signal forced the shutdown: 1 stream cut")
	})

	t.Run("a busy port exits 1 naming it", func(t *testing.T) {
		t.Parallel()
		for _, flag := range []string{"-addr", "-probe-addr"} {
			busy, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer busy.Close()
			cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-probe-addr", "127.0.0.1:0", flag, busy.Addr().String())
			out, err := cmd.CombinedOutput()
			assert.Equal(t, 1, exitCode(err), "%s busy", flag)
			assert.Contains(t, string(out), "listen tcp "+busy.Addr().String()+": bind: address already in use")
		}
	})

	t.Run("bad flags exit 2", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			args []string
			want string
		}{
			{[]string{"-drain-delay", "soon"}, `invalid value "soon" for flag -drain-delay`},
			{[]string{"-grace-period", "5s"}, "within the grace period of 5s"},
			{[]string{"-grace-period", "0s"}, "grace period is 0s"},
			{[]string{"-drain-delay", "-1s"}, "drain delay is -1s"},
			{[]string{"-init-delay", "-1s"}, "-init-delay is -1s"},
			{[]string{"-port", "9090"}, "flag provided but not defined: -port"},
			{[]string{"serve"}, `unexpected arguments ["serve"]`},
		}
		for _, tt := range tests {
			out, err := exec.Command(bin, tt.args...).CombinedOutput()
			assert.Equal(t, 2, exitCode(err), "%q", tt.args)
			assert.Contains(t, string(out), tt.want, "%q", tt.args)
		}
		out, err := exec.Command(bin, "-h").CombinedOutput()
		assert.Equal(t, 0, exitCode(err), "-h")
		assert.Contains(t, string(out), "-probe-addr")
	})
}

// build compiles the command into a temporary directory.
func build(t *testing.T) string {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the command with")
	}
	bin := t.TempDir() + "/grpcserver"
	out, err := exec.Command(gotool, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// proc is a running command.
type proc struct {
	cmd                 *exec.Cmd
	grpcAddr, probeAddr string
	lines               chan string // stderr, line by line
	exited              chan struct{}
	exitedAt            time.Time
	err                 error // from Wait

	mu  sync.Mutex
	all strings.Builder
}

var listening = regexp.MustCompile(`msg=listening grpc=(\S+) probes=(\S+)`)

// start runs the command on free loopback ports and waits until it serves.
func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	args = append([]string{"-addr", "127.0.0.1:0", "-probe-addr", "127.0.0.1:0"}, args...)
	p := &proc{cmd: exec.Command(bin, args...), lines: make(chan string, 1000), exited: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.all.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		p.err = p.cmd.Wait()
		p.exitedAt = time.Now()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		await.Recv(t, p.exited, "the example to exit once killed")
	})
	m := listening.FindStringSubmatch(p.awaitLine(t, "msg=listening"))
	p.grpcAddr, p.probeAddr = m[1], m[2]
	return p
}

// awaitLine waits for a line of stderr containing s.
func (p *proc) awaitLine(t *testing.T, s string) string {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case line := <-p.lines:
			if strings.Contains(line, s) {
				return line
			}
		case <-p.exited:
			t.Fatalf("exited before logging %q; stderr:\n%s", s, p.stderr())
		case <-timeout:
			t.Fatalf("never logged %q; stderr:\n%s", s, p.stderr())
		}
	}
}

func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.all.String()
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// wait returns the exit status.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
		return exitCode(p.err)
	case <-time.After(waitTimeout):
		t.Fatalf("the process did not exit; stderr:\n%s", p.stderr())
		return -1
	}
}

// probe returns the status of an HTTP probe.
func (p *proc) probe(t *testing.T, path string) int {
	t.Helper()
	client := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + p.probeAddr + path)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func exitCode(err error) int {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	}
	return -1
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return cc
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return c
}

// endlessStream opens a StreamingOutputCall that would take a minute, and
// waits until the server has started it.
func endlessStream(t *testing.T, p *proc) testpb.TestService_StreamingOutputCallClient {
	t.Helper()
	stream, err := testpb.NewTestServiceClient(dial(t, p.grpcAddr)).StreamingOutputCall(ctx(t), &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 1}, {Size: 1, IntervalUs: 60_000_000}},
	})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	return stream
}

// endlessUpload opens a StreamingInputCall that its client never closes,
// and waits until the server has it: a call sent after it on the same
// connection has been answered.
func endlessUpload(t *testing.T, p *proc) testpb.TestService_StreamingInputCallClient {
	t.Helper()
	client := testpb.NewTestServiceClient(dial(t, p.grpcAddr))
	upload, err := client.StreamingInputCall(ctx(t))
	require.NoError(t, err)
	require.NoError(t, upload.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}}))
	_, err = client.EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err)
	return upload
}

// watcher receives the statuses of a health Watch.
type watcher struct {
	stream healthpb.Health_WatchClient
}

func watch(t *testing.T, cc *grpc.ClientConn, service string) watcher {
	t.Helper()
	stream, err := healthpb.NewHealthClient(cc).Watch(ctx(t), &healthpb.HealthCheckRequest{Service: service})
	require.NoError(t, err)
	return watcher{stream}
}

func (w watcher) recv() (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := w.stream.Recv()
	if err != nil {
		return -1, err
	}
	return resp.Status, nil
}

// next returns the next status, which must come.
func (w watcher) next(t *testing.T) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	s, err := w.recv()
	require.NoError(t, err)
	return s
}

func check(t *testing.T, cc *grpc.ClientConn, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx(t), &healthpb.HealthCheckRequest{Service: service})
	require.NoError(t, err)
	return resp.Status
}
