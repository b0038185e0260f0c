package kubernetes

// TestRollingUpdateOnTheRig runs the examples on a real single-node
// Kubernetes (kube-apiserver, kubelet, kube-proxy in iptables mode,
// EndpointSlices), started by ../shared/k8s/up.sh beside the project, and
// checks what the manifests promise: no request fails while pods are
// deleted and replaced under load, and an old pod leaves soon after
// kube-proxy stops routing to it, not seconds later. It also measures how
// long Kubernetes takes to stop routing to a pod after its SIGTERM. It runs
// only with LAMEDUCK_K8S=1 and the node up; see README.md.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/lameduck/lameduck"
)

// Environment of the test.
const (
	rigEnv      = "LAMEDUCK_K8S"           // 1: run the test against the rig
	deletesEnv  = "LAMEDUCK_K8S_DELETES"   // lone pod deletions per example (default 2)
	restartsEnv = "LAMEDUCK_K8S_RESTARTS"  // rollout restarts per example (default 1)
	measureEnv  = "LAMEDUCK_K8S_MEASURE"   // 1: measure only, do not check when pods leave
	examplesEnv = "LAMEDUCK_K8S_EXAMPLES"  // comma-separated examples to run (default all)
	allowEnv    = "LAMEDUCK_K8S_ALLOWANCE" // the pods' allowance after the slices, a Go duration
	slackEnv    = "LAMEDUCK_K8S_SLACK"     // the time a pod may take after it, a Go duration (default 300ms)
	rigDirEnv   = "LAMEDUCK_K8S_DIR"       // the rig's state directory (default /tmp/k8s)
)

// manifestQuiet is the manifests' -drain-quiet: a delay that a late
// arrival held ends this long after it.
const manifestQuiet = 500 * time.Millisecond

// leaveSlack is the time a pod may take, after its allowance, to finish
// its requests and exit.
const leaveSlack = 300 * time.Millisecond

// iptablesPoll is the period of the polls of kube-proxy's rules.
const iptablesPoll = 20 * time.Millisecond

// rig is the single-node cluster of ../shared/k8s.
type rig struct {
	dir    string // state: bin/, pki/, logs/
	shared string // the scripts
	netns  string
}

// needRig returns the rig, or skips the test saying why it cannot run.
func needRig(t *testing.T) *rig {
	t.Helper()
	const how = "the Kubernetes rig is not up (bash ../shared/k8s/setup.sh; AUTHZ=RBAC bash ../shared/k8s/up.sh from the project root), set " + rigEnv + "=1 to run"
	if os.Getenv(rigEnv) != "1" {
		t.Skip(how)
	}
	r := &rig{dir: "/tmp/k8s", shared: "../../../shared/k8s", netns: "/run/netns/k8snode"}
	if d := os.Getenv(rigDirEnv); d != "" {
		r.dir = d
	}
	for _, f := range []string{r.netns, r.dir + "/bin/kubectl", r.shared + "/image.sh"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("%s: %v", how, err)
		}
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skipf("%s: %v", how, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := r.kubectl(ctx, "get", "--raw", "/readyz").CombinedOutput(); err != nil {
		t.Skipf("%s: kube-apiserver: %v: %s", how, err, bytes.TrimSpace(out))
	}
	return r
}

// nsx returns a command run in the node's network namespace.
func (r *rig) nsx(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + r.netns, "--", name}, args...)...)
}

func (r *rig) kubectl(ctx context.Context, args ...string) *exec.Cmd {
	return r.nsx(ctx, r.dir+"/bin/kubectl", append([]string{"--kubeconfig", r.dir + "/pki/admin.kubeconfig"}, args...)...)
}

// kc runs kubectl and returns its output, failing the test on an error.
func (r *rig) kc(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := r.kubectl(ctx, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "kubectl %s: %s", strings.Join(args, " "), stderr.String())
	return string(out)
}

// exampleRun is an example to deploy and roll.
type exampleRun struct {
	name       string // the program under ../, and its image
	manifest   string
	deployment string
	service    string
	port       int    // the Service's port
	load       string // loadConfig.Kind
}

var examples = []exampleRun{
	{name: "httpserver", manifest: "httpserver.yaml", deployment: "lameduck-httpserver", service: "lameduck-httpserver", port: 80, load: "http1"},
	{name: "grpcserver", manifest: "grpcserver.yaml", deployment: "grpcserver", service: "grpcserver", port: 9090, load: "grpc"},
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	require.NoError(t, err, "%s", name)
	return d
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "%s", name)
	return n
}

func TestRollingUpdateOnTheRig(t *testing.T) {
	r := needRig(t)
	only := os.Getenv(examplesEnv)
	for _, ex := range examples {
		if only != "" && !slices.Contains(strings.Split(only, ","), ex.name) {
			continue
		}
		t.Run(ex.name, func(t *testing.T) { r.rollExample(t, ex) })
	}
}

// rollExample deploys ex in a namespace of its own, puts it under load,
// deletes pods one at a time, restarts the Deployment, and checks and
// reports what happened to every pod that was replaced.
func (r *rig) rollExample(t *testing.T, ex exampleRun) {
	deletes, restarts := envInt(t, deletesEnv, 2), envInt(t, restartsEnv, 1)
	measureOnly := os.Getenv(measureEnv) == "1"
	// A pod must have left at most its allowance after the slices, plus
	// leaveSlack, after kube-proxy's rules stopped sending it connections.
	allowance, slack := envDuration(t, allowEnv, lameduck.EndpointsAllowance), envDuration(t, slackEnv, leaveSlack)
	ns := "lameduck-rig-" + ex.name

	// The image: the example built statically, packed by the rig's image.sh.
	bin := filepath.Join(t.TempDir(), "lameduck-"+ex.name)
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../"+ex.name)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	out, err = exec.Command("bash", r.shared+"/image.sh", "lameduck-"+ex.name, bin).CombinedOutput()
	require.NoError(t, err, "image.sh: %s", out)
	image := "docker.io/local/lameduck-" + ex.name + ":v1"

	// A fresh namespace, left for inspection after a failure.
	r.kc(t, "delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=3m")
	r.kc(t, "create", "namespace", ns)
	t.Cleanup(func() {
		if !t.Failed() {
			r.kubectl(context.Background(), "delete", "namespace", ns, "--wait=false").Run()
		}
	})
	manifest := filepath.Join(t.TempDir(), ex.manifest)
	require.NoError(t, os.WriteFile(manifest, localManifest(t, ex.manifest, image), 0o644))
	r.kc(t, "apply", "-n", ns, "-f", manifest)
	r.kc(t, "rollout", "status", "-n", ns, "deployment/"+ex.deployment, "--timeout=3m")
	replicas, err := strconv.Atoi(strings.TrimSpace(r.kc(t, "get", "deployment", "-n", ns, ex.deployment, "-o", "jsonpath={.spec.replicas}")))
	require.NoError(t, err)
	clusterIP := strings.TrimSpace(r.kc(t, "get", "service", "-n", ns, ex.service, "-o", "jsonpath={.spec.clusterIP}"))
	require.NotEmpty(t, clusterIP)

	ctx, cancel := context.WithCancel(context.Background())
	obs := newObservations()
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, watch := range []func(context.Context, *observations) error{
		func(ctx context.Context, o *observations) error { return r.watchSlices(ctx, o, ns, ex.service) },
		r.pollIPTables,
		func(ctx context.Context, o *observations) error { return r.followPods(ctx, o, ns) },
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := watch(ctx, obs); err != nil && ctx.Err() == nil {
				t.Errorf("watching the cluster: %v", err)
			}
		}()
	}

	// rollout status returns once the pods are ready, which kube-proxy
	// learns later: until its rules list them, the Service refuses
	// connections.
	r.waitRouted(t, obs, ns, time.Minute)
	timeout := 2 * time.Minute
	// deleteOldest deletes the oldest pod and waits for its replacement.
	deleteOldest := func(cause string) string {
		pods := r.runningPods(t, ns)
		require.NotEmpty(t, pods)
		victim := pods[0]
		obs.deleted(victim, cause, time.Now())
		r.kc(t, "delete", "pod", "-n", ns, victim, "--wait=false")
		require.True(t, obs.waitStopped(ctx, []string{victim}, timeout), "pod %s did not stop", victim)
		r.waitComplete(t, ns, ex.deployment, replicas, timeout)
		return victim
	}
	// With no traffic at all, only the slices can end the delay.
	t.Logf("deletion without load: %s", obs.line(deleteOldest("idle")))
	r.waitRouted(t, obs, ns, time.Minute)

	load := r.startLoad(t, ctx, loadConfig{Kind: ex.load, Addr: fmt.Sprintf("%s:%d", clusterIP, ex.port),
		KeepAlive: 8, Fresh: 3, Pause: 5 * time.Millisecond, Timeout: 5 * time.Second})
	load.waitFlowing(t, 30*time.Second)
	// Let kube-proxy's last sync, for the new pods, age past its
	// minSyncPeriod, so that the first deletion is a lone one.
	time.Sleep(3 * time.Second)

	for i := range deletes {
		t.Logf("lone deletion %d/%d: %s", i+1, deletes, obs.line(deleteOldest("delete")))
		time.Sleep(3 * time.Second)
	}
	for i := range restarts {
		old := r.runningPods(t, ns)
		for _, p := range old {
			obs.deleted(p, "rollout", time.Time{})
		}
		r.kc(t, "rollout", "restart", "-n", ns, "deployment/"+ex.deployment)
		r.kc(t, "rollout", "status", "-n", ns, "deployment/"+ex.deployment, "--timeout=5m")
		require.True(t, obs.waitStopped(ctx, old, timeout), "old pods %v did not all stop", old)
		r.waitComplete(t, ns, ex.deployment, replicas, timeout)
		t.Logf("rollout restart %d/%d of %v done", i+1, restarts, old)
		time.Sleep(3 * time.Second)
	}
	final := load.stop(t)
	cancel()
	wg.Wait()

	t.Logf("load: %d requests, %d failed", final.OK+final.Failed, final.Failed)
	for _, f := range final.Failures {
		t.Errorf("failed request at %s (%s client): %s: %s; %s", f.At.Format("15:04:05.000"), f.Client, f.Kind, f.Err, obs.around(f.At))
	}
	assert.Zero(t, final.Failed, "failed requests")

	obs.report(t, allowance, slack)
	for _, p := range obs.replaced() {
		switch {
		case p.lameDuck.IsZero():
			t.Errorf("%s: no %q line in its log", p.name, "lameduck: lame duck")
			continue
		case p.iptRemoved.IsZero():
			t.Errorf("%s: its IP %s was never seen leaving kube-proxy's rules", p.name, p.ip)
			continue
		case p.stopped.IsZero():
			t.Errorf("%s: no %q line in its log", p.name, "lameduck: stopped")
			continue
		}
		// The port must stay open while kube-proxy may still send
		// connections to it: the last poll that saw the rules listing
		// the pod came before the drain began.
		if !p.draining.IsZero() && p.draining.Before(p.iptLastSeen) {
			t.Errorf("%s closed its port %v before kube-proxy's rules stopped listing it (drain at %s, rules seen at %s)",
				p.name, p.iptLastSeen.Sub(p.draining).Round(time.Millisecond), clock(p.draining), clock(p.iptLastSeen))
		}
		if measureOnly {
			continue
		}
		// The pod watches its slices from its SIGTERM on, which the kubelet
		// can send after kube-proxy has acted (1.3 s after the deletion,
		// once): the slices then cannot say since when they have stopped
		// routing to it, and the allowance runs from the signal.
		from := p.iptRemoved
		if p.signal.After(from) {
			from = p.signal
		}
		bound := from.Add(allowance)
		// A connection that still arrives holds the delay for the quiet
		// period after it, as it must: routing has not caught up.
		if la := parseDur(p.attrs["last_arrival"]); p.attrs["drain_delay_ended"] == "quiet" && la > 0 {
			if quietEnd := p.signal.Add(la + manifestQuiet); quietEnd.After(bound) {
				bound = quietEnd
			}
		}
		over := p.stopped.Sub(bound)
		if over <= slack {
			continue
		}
		// What the time went on: the pod learning of the slices after
		// kube-proxy had acted, the delay's end after that, the drain.
		seen, ended := "?", "?"
		if u := parseDur(p.attrs["endpoints_unrouted"]); u > 0 {
			at := p.signal.Add(u)
			seen, ended = since(p.iptRemoved, at), since(at, p.draining)
		}
		report := t.Errorf
		why := "its threads' wait for a CPU was not measured"
		if waited, ok := p.cpuWaited(p.signal, p.stopped); ok {
			why = fmt.Sprintf("its threads waited %v in all for a CPU meanwhile", waited.Round(time.Millisecond))
			if waited >= over {
				// The host's load, not the pod, made it late: see
				// cpuwait_test.go.
				report = t.Logf
				why += fmt.Sprintf(", more than the %v it is late by: not judged", over.Round(time.Millisecond))
			}
		}
		report("%s left %v after kube-proxy stopped routing to it, more than the allowance %v + %v: "+
			"the pod saw the slices unrouted %s after the rules changed (the test's watch %s), its delay ended %s after that (by %q), its drain took %s; %s; its log:\n%s",
			p.name, p.stopped.Sub(p.iptRemoved).Round(time.Millisecond), allowance, slack,
			seen, since(p.iptRemoved, p.sliceNotReady), ended,
			p.attrs["drain_delay_ended"], since(p.draining, p.stopped), why, strings.Join(p.lines, "\n"))
	}
}

// localManifest returns the example's manifest for the rig: the local
// image, never pulled.
func localManifest(t *testing.T, file, image string) []byte {
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out bytes.Buffer
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		if doc == nil {
			continue
		}
		if doc["kind"] == "Deployment" {
			spec := doc["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			for _, c := range spec["containers"].([]any) {
				c := c.(map[string]any)
				c["image"] = image
				c["imagePullPolicy"] = "Never"
			}
		}
		b, err := yaml.Marshal(doc)
		require.NoError(t, err)
		out.WriteString("---\n")
		out.Write(b)
	}
	return out.Bytes()
}

// kubePod is the part of a Pod the test reads.
type kubePod struct {
	Metadata struct {
		Name              string
		UID               string
		CreationTimestamp time.Time
		DeletionTimestamp *time.Time
	}
	Spec struct {
		Containers []struct{ Name string }
	}
	Status struct {
		Phase             string
		PodIP             string
		ContainerStatuses []struct {
			Name        string
			Ready       bool
			ContainerID string
			State       struct {
				Running *struct{} `json:"running"`
			}
		}
	}
}

func (r *rig) pods(ctx context.Context, ns string) ([]kubePod, error) {
	out, err := r.kubectl(ctx, "get", "pods", "-n", ns, "-o", "json").Output()
	if err != nil {
		return nil, err
	}
	var list struct{ Items []kubePod }
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// runningPods returns the ready pods not being deleted, oldest first.
func (r *rig) runningPods(t *testing.T, ns string) []string {
	pods, err := r.pods(context.Background(), ns)
	require.NoError(t, err)
	sort.Slice(pods, func(i, j int) bool {
		return pods[i].Metadata.CreationTimestamp.Before(pods[j].Metadata.CreationTimestamp)
	})
	var names []string
	for _, p := range pods {
		if p.Metadata.DeletionTimestamp == nil && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].Ready {
			names = append(names, p.Metadata.Name)
		}
	}
	return names
}

// waitComplete waits until the Deployment has its replicas ready and
// available, and no pod of the namespace is left terminating.
func (r *rig) waitComplete(t *testing.T, ns, deployment string, replicas int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pods, err := r.pods(context.Background(), ns)
		require.NoError(t, err)
		out := r.kc(t, "get", "deployment", "-n", ns, deployment, "-o", "jsonpath={.status.readyReplicas} {.status.availableReplicas} {.status.updatedReplicas}")
		if len(pods) == replicas && out == strings.TrimSpace(strings.Repeat(strconv.Itoa(replicas)+" ", 3)) {
			return
		}
		require.True(t, time.Now().Before(deadline), "deployment %s not complete after %v: %d pods, ready/available/updated %s", deployment, timeout, len(pods), out)
		time.Sleep(500 * time.Millisecond)
	}
}

// waitRouted waits until kube-proxy's rules list every ready pod of the
// namespace.
func (r *rig) waitRouted(t *testing.T, o *observations, ns string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pods, err := r.pods(context.Background(), ns)
		require.NoError(t, err)
		var missing []string
		o.mu.Lock()
		for _, p := range pods {
			if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].Ready && !o.iptNow[p.Status.PodIP] {
				missing = append(missing, p.Metadata.Name+" "+p.Status.PodIP)
			}
		}
		o.mu.Unlock()
		if len(missing) == 0 && len(pods) > 0 {
			return
		}
		require.True(t, time.Now().Before(deadline), "kube-proxy's rules do not list %v after %v", missing, timeout)
		time.Sleep(500 * time.Millisecond)
	}
}

// podRecord is what the test saw of one pod.
type podRecord struct {
	name, ip string
	cause    string    // "idle", "delete", "rollout", or "" for a pod not replaced
	deleteAt time.Time // when the test deleted it, for a lone deletion

	// From its log (slog's time=, to the millisecond).
	lameDuck, draining, stopped time.Time
	// signal is when the pod got SIGTERM: the "stopped" line's time less
	// its since_signal, or else the "lame duck" line's time, which comes
	// once the servers have turned lame duck.
	signal  time.Time
	attrs   map[string]string // of the "lameduck: draining" line
	lines   []string          // lameduck's, from "lame duck" on
	logDone bool

	// From the EndpointSlice watch, as the events arrived.
	sliceNotReady time.Time // the first event in which no slice lists it ready
	// From the polls of kube-proxy's rules: the start of the first poll that
	// no longer saw the pod's IP, and the start of the last that did.
	iptRemoved, iptLastSeen time.Time

	// How long its threads had waited for a CPU, sampled every
	// cpuWaitPoll while it ran.
	cpuWait []cpuSample
}

// observations gathers what the watchers saw, by pod and by IP.
type observations struct {
	mu     sync.Mutex
	pods   map[string]*podRecord
	order  []string
	byIP   map[string]*podRecord
	slices map[string]map[string]bool // slice name -> IP -> ready
	// By IP, for IPs seen before their pod: the first sighting in slices
	// and rules.
	everReady     map[string]bool
	sliceNotReady map[string]time.Time
	iptSeen       map[string]time.Time // the last poll that listed it
	iptRemoved    map[string]time.Time
	iptNow        map[string]bool // what the last poll listed
	changed       chan struct{}
}

func newObservations() *observations {
	return &observations{
		pods: map[string]*podRecord{}, byIP: map[string]*podRecord{}, slices: map[string]map[string]bool{},
		everReady: map[string]bool{}, sliceNotReady: map[string]time.Time{},
		iptSeen: map[string]time.Time{}, iptRemoved: map[string]time.Time{},
		changed: make(chan struct{}, 1),
	}
}

func (o *observations) notify() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

// pod returns the record of name, creating it; call with o.mu held.
func (o *observations) pod(name string) *podRecord {
	p := o.pods[name]
	if p == nil {
		p = &podRecord{name: name}
		o.pods[name] = p
		o.order = append(o.order, name)
	}
	return p
}

func (o *observations) deleted(name, cause string, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.pod(name)
	p.cause, p.deleteAt = cause, at
}

// waitStopped waits until every pod in names has logged that it stopped,
// or its log ended.
func (o *observations) waitStopped(ctx context.Context, names []string, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		o.mu.Lock()
		done := true
		for _, n := range names {
			if p := o.pods[n]; p == nil || (p.stopped.IsZero() && !p.logDone) {
				done = false
			}
		}
		o.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-o.changed:
		case <-time.After(100 * time.Millisecond):
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// setIP records the pod's IP and joins what was seen of it by IP.
func (o *observations) setIP(name, ip string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.pod(name)
	if p.ip != "" || ip == "" {
		return
	}
	p.ip = ip
	o.byIP[ip] = p
	p.sliceNotReady = o.sliceNotReady[ip]
	p.iptRemoved, p.iptLastSeen = o.iptRemoved[ip], o.iptSeen[ip]
}

// sliceEvent is a watch event of an EndpointSlice.
type sliceEvent struct {
	Type   string
	Object struct {
		Metadata  struct{ Name string }
		Endpoints []struct {
			Addresses  []string
			Conditions struct{ Ready, Serving, Terminating *bool }
		}
	}
}

// watchSlices watches the Service's EndpointSlices and records, for each
// IP that was listed ready, when no slice listed it ready any more.
func (r *rig) watchSlices(ctx context.Context, o *observations, ns, service string) error {
	// The raw watch: kubectl copies the API server's events as they come,
	// without decoding and printing them again.
	query := url.Values{"watch": {"1"}, "labelSelector": {"kubernetes.io/service-name=" + service}}
	cmd := r.kubectl(ctx, "get", "--raw", "/apis/discovery.k8s.io/v1/namespaces/"+ns+"/endpointslices?"+query.Encode())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	dec := json.NewDecoder(stdout)
	for {
		var ev sliceEvent
		if err := dec.Decode(&ev); err != nil {
			return fmt.Errorf("EndpointSlice watch: %w", err)
		}
		at := time.Now()
		o.mu.Lock()
		name := ev.Object.Metadata.Name
		if ev.Type == "DELETED" {
			delete(o.slices, name)
		} else {
			ips := map[string]bool{}
			for _, e := range ev.Object.Endpoints {
				// A nil ready condition means ready.
				ready := e.Conditions.Ready == nil || *e.Conditions.Ready
				for _, a := range e.Addresses {
					ips[a] = ready
				}
			}
			o.slices[name] = ips
		}
		ready := map[string]bool{}
		for _, ips := range o.slices {
			for ip, r := range ips {
				ready[ip] = ready[ip] || r
			}
		}
		for ip := range o.everReady {
			if !ready[ip] && o.sliceNotReady[ip].IsZero() {
				o.sliceNotReady[ip] = at
				if p := o.byIP[ip]; p != nil {
					p.sliceNotReady = at
				}
			}
		}
		for ip, r := range ready {
			if r {
				o.everReady[ip] = true
			}
		}
		o.mu.Unlock()
		o.notify()
	}
}

var dnatTo = regexp.MustCompile(`--to-destination (\d+\.\d+\.\d+\.\d+):\d+`)

// pollIPTables reads kube-proxy's nat rules every iptablesPoll and records,
// for each IP they sent connections to, the first poll that no longer
// listed it.
func (r *rig) pollIPTables(ctx context.Context, o *observations) error {
	tick := time.NewTicker(iptablesPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		at := time.Now()
		out, err := r.nsx(ctx, "iptables-save", "-t", "nat").Output()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("iptables-save: %w", err)
		}
		listed := map[string]bool{}
		for _, m := range dnatTo.FindAllSubmatch(out, -1) {
			listed[string(m[1])] = true
		}
		o.mu.Lock()
		o.iptNow = listed
		for ip := range listed {
			o.iptSeen[ip] = at
			if p := o.byIP[ip]; p != nil {
				p.iptLastSeen = at
			}
		}
		for ip := range o.iptSeen {
			if !listed[ip] && o.iptRemoved[ip].IsZero() {
				o.iptRemoved[ip] = at
				if p := o.byIP[ip]; p != nil {
					p.iptRemoved = at
				}
			}
		}
		o.mu.Unlock()
	}
}

// followPods watches the namespace's pods and follows the log of each one
// from its file under the rig's logs/pods once its container runs. The file
// stays open, so its last lines are read even after the kubelet deletes it.
// A watch rather than polls: every kubectl costs a good part of a core's
// second, which the pods being measured would miss.
func (r *rig) followPods(ctx context.Context, o *observations, ns string) error {
	cmd := r.kubectl(ctx, "get", "--raw", "/api/v1/namespaces/"+ns+"/pods?watch=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	events := make(chan kubePod)
	watchErr := make(chan error, 1)
	go func() {
		dec := json.NewDecoder(stdout)
		for {
			var ev struct {
				Type   string
				Object kubePod
			}
			if err := dec.Decode(&ev); err != nil {
				watchErr <- fmt.Errorf("pod watch: %w", err)
				return
			}
			select {
			case events <- ev.Object:
			case <-ctx.Done():
				return
			}
		}
	}()

	following := map[string]bool{}
	waiting := map[string]kubePod{} // running, but the log file is not there yet
	var wg sync.WaitGroup
	defer wg.Wait()
	follow := func(p kubePod) {
		name := p.Metadata.Name
		file := filepath.Join(r.dir, "logs", "pods", ns+"_"+name+"_"+p.Metadata.UID, p.Spec.Containers[0].Name, "0.log")
		f, err := os.Open(file)
		if err != nil {
			waiting[name] = p
			return
		}
		delete(waiting, name)
		following[name] = true
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer f.Close()
			followLog(ctx, o, name, f)
		}()
		go func() {
			defer wg.Done()
			sampleCPUWait(ctx, o, name, p.Status.ContainerStatuses[0].ContainerID)
		}()
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-watchErr:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case p := <-events:
			o.setIP(p.Metadata.Name, p.Status.PodIP)
			if !following[p.Metadata.Name] && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil {
				follow(p)
			}
		case <-tick.C:
			for _, p := range waiting {
				follow(p)
			}
		}
	}
}

// followLog reads a container's log (the CRI format: time, stream, P or F,
// text) until the pod's "lameduck: stopped" line or the end of ctx.
func followLog(ctx context.Context, o *observations, name string, f *os.File) {
	defer func() {
		o.mu.Lock()
		o.pod(name).logDone = true
		o.mu.Unlock()
		o.notify()
	}()
	br := bufio.NewReader(f)
	var partial, pending string
	for {
		chunk, err := br.ReadString('\n')
		pending += chunk
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		line := strings.TrimSuffix(pending, "\n")
		pending = ""
		fields := strings.SplitN(line, " ", 4)
		if len(fields) < 4 {
			continue
		}
		partial += fields[3]
		if fields[2] == "P" {
			continue
		}
		text := partial
		partial = ""
		kv := parseSlogText(text)
		at, err := time.Parse(time.RFC3339Nano, kv["time"])
		if err != nil {
			continue
		}
		o.mu.Lock()
		p := o.pod(name)
		if !p.lameDuck.IsZero() || kv["msg"] == "lameduck: lame duck" {
			p.lines = append(p.lines, text)
		}
		switch kv["msg"] {
		case "lameduck: lame duck":
			p.lameDuck, p.signal = at, at
		case "lameduck: draining":
			p.draining, p.attrs = at, kv
		case "lameduck: stopped":
			p.stopped = at
			if d := parseDur(kv["since_signal"]); d > 0 {
				p.signal = at.Add(-d)
			}
		}
		stopped := !p.stopped.IsZero()
		o.mu.Unlock()
		if stopped {
			return
		}
	}
}

// parseSlogText splits a line of slog's text handler into its keys and
// values, unquoting quoted values.
func parseSlogText(s string) map[string]string {
	kv := map[string]string{}
	for s != "" {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				break
			}
			val, _ = strconv.Unquote(s[:end+1])
			s = s[end+1:]
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			val, s = s[:sp], s[sp:]
		}
		kv[key] = val
	}
	return kv
}

// replaced returns the pods the test deleted or the rollout replaced, in
// the order they were first seen.
func (o *observations) replaced() []podRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ps []podRecord
	for _, n := range o.order {
		if p := o.pods[n]; p.cause != "" {
			ps = append(ps, *p)
		}
	}
	return ps
}

// line describes what was seen of one pod, for the log.
func (o *observations) line(name string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.pods[name]
	if p == nil {
		return name + ": nothing seen"
	}
	return fmt.Sprintf("%s %s: SIGTERM→slice %s, SIGTERM→rules %s, slice→rules %s, SIGTERM→drain %s, rules→stopped %s",
		p.name, p.ip, since(p.signal, p.sliceNotReady), since(p.signal, p.iptRemoved), since(p.sliceNotReady, p.iptRemoved),
		since(p.signal, p.draining), since(p.iptRemoved, p.stopped))
}

// around says which pods were leaving when a request failed at t.
func (o *observations) around(at time.Time) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var near []string
	for _, n := range o.order {
		p := o.pods[n]
		if !p.signal.IsZero() && at.After(p.signal.Add(-time.Second)) && (p.stopped.IsZero() || at.Before(p.stopped.Add(time.Second))) {
			near = append(near, fmt.Sprintf("%s (%s) SIGTERM%s drain%s rules%s", p.name, p.ip,
				since(p.signal, at), since(p.draining, at), since(p.iptRemoved, at)))
		}
	}
	if len(near) == 0 {
		return "no pod was leaving"
	}
	return "relative to the failure: " + strings.Join(near, "; ")
}

func since(from, to time.Time) string {
	if from.IsZero() || to.IsZero() {
		return "?"
	}
	d := to.Sub(from).Round(time.Millisecond)
	if d >= 0 {
		return "+" + d.String()
	}
	return d.String()
}

// parseDur reads a duration of the log, zero if it is not one.
func parseDur(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

func clock(t time.Time) string { return t.Format("15:04:05.000") }

// report logs, for every pod replaced, how long Kubernetes took to stop
// routing to it, and a summary by cause.
func (o *observations) report(t *testing.T, allowance, slack time.Duration) {
	ps := o.replaced()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pod\tcause\tIP\tdelete→SIGTERM\tSIGTERM\t→slice\t→rules\tslice→rules\tpod saw it\t→drain\tended\trules→drain\trules→stopped\tCPU wait\t")
	type key struct{ cause, what string }
	sums := map[key][]time.Duration{}
	add := func(cause, what string, from, to time.Time) {
		if !from.IsZero() && !to.IsZero() {
			sums[key{cause, what}] = append(sums[key{cause, what}], to.Sub(from))
		}
	}
	for _, p := range ps {
		var seen time.Time // when the pod saw its slices stop routing to it
		if u := parseDur(p.attrs["endpoints_unrouted"]); u > 0 {
			seen = p.signal.Add(u)
		}
		wait := "?"
		if w, ok := p.cpuWaited(p.signal, p.stopped); ok {
			wait = w.Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.name, p.cause, p.ip,
			since(p.deleteAt, p.signal), clock(p.signal),
			since(p.signal, p.sliceNotReady), since(p.signal, p.iptRemoved), since(p.sliceNotReady, p.iptRemoved), since(p.signal, seen),
			since(p.signal, p.draining), p.attrs["drain_delay_ended"], since(p.iptRemoved, p.draining), since(p.iptRemoved, p.stopped), wait)
		for _, c := range []string{p.cause, "all"} {
			add(c, "delete→SIGTERM", p.deleteAt, p.signal)
			add(c, "SIGTERM→slice", p.signal, p.sliceNotReady)
			add(c, "SIGTERM→rules", p.signal, p.iptRemoved)
			add(c, "slice→rules", p.sliceNotReady, p.iptRemoved)
			add(c, "slice→pod saw", p.sliceNotReady, seen)
			add(c, "SIGTERM→drain", p.signal, p.draining)
			add(c, "rules→stopped", p.iptRemoved, p.stopped)
		}
	}
	tw.Flush()
	fmt.Fprintf(&b, "summary (min / median / max, n); rules polled every %v; allowance checked %v + %v:\n", iptablesPoll, allowance, slack)
	for _, c := range []string{"idle", "delete", "rollout", "all"} {
		for _, w := range []string{"delete→SIGTERM", "SIGTERM→slice", "SIGTERM→rules", "slice→rules", "slice→pod saw", "SIGTERM→drain", "rules→stopped"} {
			ds := sums[key{c, w}]
			if len(ds) == 0 {
				continue
			}
			slices.Sort(ds)
			r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
			fmt.Fprintf(&b, "  %-8s %-14s %v / %v / %v  (n=%d)\n", c, w, r(ds[0]), r(median(ds)), r(ds[len(ds)-1]), len(ds))
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("pods replaced (times after SIGTERM, from the pod's log); load average %s:\n%s",
		strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "), b.String())
}

func median(ds []time.Duration) time.Duration {
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}

// runningLoad is the load generator, running in the node's namespace.
type runningLoad struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	last   loadReport
	final  *loadReport
	done   chan struct{}
	stderr bytes.Buffer
}

// startLoad runs the test binary as the load generator inside the node's
// network namespace, where the Service's cluster IP is routed.
func (r *rig) startLoad(t *testing.T, ctx context.Context, cfg loadConfig) *runningLoad {
	exe, err := os.Executable()
	require.NoError(t, err)
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	l := &runningLoad{done: make(chan struct{})}
	l.cmd = r.nsx(ctx, exe)
	l.cmd.Env = append(os.Environ(), loadEnv+"="+string(js))
	l.cmd.Stderr = &l.stderr
	l.stdin, err = l.cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := l.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, l.cmd.Start())
	go func() {
		defer close(l.done)
		dec := json.NewDecoder(stdout)
		for {
			var rep loadReport
			if err := dec.Decode(&rep); err != nil {
				l.cmd.Wait()
				return
			}
			l.mu.Lock()
			l.last = rep
			if rep.Final {
				l.final = &rep
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { l.stdin.Close(); <-l.done })
	return l
}

// waitFlowing waits until requests succeed.
func (l *runningLoad) waitFlowing(t *testing.T, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		ok := l.last.OK
		l.mu.Unlock()
		if ok > 100 {
			return
		}
		select {
		case <-l.done:
			t.Fatalf("the load generator exited: %s", l.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("no load flowing after %v: %+v", timeout, l.last)
}

// stop ends the load and returns its final report.
func (l *runningLoad) stop(t *testing.T) loadReport {
	l.stdin.Close()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	require.NotNil(t, l.final, "%v: %s", errNoFinal, l.stderr.String())
	return *l.final
}

// TestOneReplicaOnTheRig deletes the only pod of the httpserver example run
// with one replica, by turns with `kubectl delete pod` and with an eviction
// as `kubectl drain` makes, while clients open a new connection to the Service's
// cluster IP every 50 ms, with a replacement that takes 3 s and then 12 s
// to initialise (-init-delay). kube-proxy routes a Service with no ready
// endpoint to its terminating endpoints that still pass their readiness
// probe (KEP-1669): the old pod stays ready, the last endpoint, until the
// replacement is, and no connection may fail. A pod that turned readiness
// off at its SIGTERM failed 7 to 42 of 500 connections here with a 3 s
// start, 240 of 600 with a 12 s one.
func TestOneReplicaOnTheRig(t *testing.T) {
	r := needRig(t)
	deletes := envInt(t, deletesEnv, 2)
	image := r.buildExample(t, "httpserver")
	for _, init := range []time.Duration{3 * time.Second, 12 * time.Second} {
		t.Run(fmt.Sprintf("init-delay=%v", init), func(t *testing.T) { r.deleteOnlyPod(t, image, init, deletes) })
	}
}

// buildExample builds the example name statically and imports it into the
// node as an image, whose name it returns.
func (r *rig) buildExample(t *testing.T, name string) string {
	bin := filepath.Join(t.TempDir(), "lameduck-"+name)
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../"+name)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	out, err = exec.Command("bash", r.shared+"/image.sh", "lameduck-"+name, bin).CombinedOutput()
	require.NoError(t, err, "image.sh: %s", out)
	return "docker.io/local/lameduck-" + name + ":v1"
}

// deleteOnlyPod deploys httpserver.yaml with one replica whose
// initialisation takes init, and deletes its pod deletes times under load,
// by turns with a delete and with an eviction.
func (r *rig) deleteOnlyPod(t *testing.T, image string, init time.Duration, deletes int) {
	const deployment, service = "lameduck-httpserver", "lameduck-httpserver"
	ns := "lameduck-rig-one"
	r.kc(t, "delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=3m")
	r.kc(t, "create", "namespace", ns)
	t.Cleanup(func() {
		if !t.Failed() {
			r.kubectl(context.Background(), "delete", "namespace", ns, "--wait=false").Run()
		}
	})
	manifest := filepath.Join(t.TempDir(), "httpserver.yaml")
	require.NoError(t, os.WriteFile(manifest, oneReplica(t, localManifest(t, "httpserver.yaml", image), init), 0o644))
	r.kc(t, "apply", "-n", ns, "-f", manifest)
	r.kc(t, "rollout", "status", "-n", ns, "deployment/"+deployment, "--timeout=3m")
	clusterIP := strings.TrimSpace(r.kc(t, "get", "service", "-n", ns, service, "-o", "jsonpath={.spec.clusterIP}"))
	require.NotEmpty(t, clusterIP)

	ctx, cancel := context.WithCancel(context.Background())
	obs := newObservations()
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, watch := range []func(context.Context, *observations) error{
		func(ctx context.Context, o *observations) error { return r.watchSlices(ctx, o, ns, service) },
		r.pollIPTables,
		func(ctx context.Context, o *observations) error { return r.followPods(ctx, o, ns) },
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := watch(ctx, obs); err != nil && ctx.Err() == nil {
				t.Errorf("watching the cluster: %v", err)
			}
		}()
	}
	r.waitRouted(t, obs, ns, time.Minute)

	// One client opens a new connection every 50 ms, as in the issue's
	// measurements; two keep theirs alive for as long as the pod lets them.
	load := r.startLoad(t, ctx, loadConfig{Kind: "http1", Addr: clusterIP + ":80",
		KeepAlive: 2, Fresh: 1, Pause: 50 * time.Millisecond, Timeout: 5 * time.Second})
	load.waitFlowing(t, 30*time.Second)
	time.Sleep(2 * time.Second)
	timeout := 2 * time.Minute
	for i := range deletes {
		pods := r.runningPods(t, ns)
		require.Len(t, pods, 1)
		victim := pods[0]
		how := [...]string{"delete", "evict"}[i%2]
		obs.deleted(victim, how, time.Now())
		if how == "delete" {
			r.kc(t, "delete", "pod", "-n", ns, victim, "--wait=false")
		} else {
			// What kubectl drain does for each pod of the node.
			eviction := filepath.Join(t.TempDir(), "eviction.json")
			require.NoError(t, os.WriteFile(eviction, fmt.Appendf(nil,
				`{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":%q,"namespace":%q}}`, victim, ns), 0o644))
			r.kc(t, "create", "--raw", "/api/v1/namespaces/"+ns+"/pods/"+victim+"/eviction", "-f", eviction)
		}
		require.True(t, obs.waitStopped(ctx, []string{victim}, timeout), "pod %s did not stop", victim)
		r.waitComplete(t, ns, deployment, 1, timeout)
		r.waitRouted(t, obs, ns, time.Minute)
		t.Logf("%s %d/%d: %s", how, i+1, deletes, obs.line(victim))
		time.Sleep(2 * time.Second)
	}
	final := load.stop(t)
	cancel()
	wg.Wait()

	t.Logf("load: %d requests, %d failed", final.OK+final.Failed, final.Failed)
	for _, f := range final.Failures {
		t.Errorf("failed request at %s (%s client): %s: %s; %s", f.At.Format("15:04:05.000"), f.Client, f.Kind, f.Err, obs.around(f.At))
	}
	assert.Zero(t, final.Failed, "failed requests")
	for _, p := range obs.replaced() {
		held := p.attrs["last_endpoint_held"]
		t.Logf("%s: deleted→SIGTERM %s, held as the last endpoint %s, SIGTERM→lame duck %s, SIGTERM→drain %s (ended by %s), rules→drain %s, SIGTERM→stopped %s",
			p.name, since(p.deleteAt, p.signal), held, since(p.signal, p.lameDuck), since(p.signal, p.draining),
			p.attrs["drain_delay_ended"], since(p.iptRemoved, p.draining), since(p.signal, p.stopped))
		assert.NotEmpty(t, held, "%s was the Service's last endpoint, and must have said how long it stayed ready: %s", p.name, strings.Join(p.lines, "\n"))
		if !p.draining.IsZero() && p.draining.Before(p.iptLastSeen) {
			t.Errorf("%s closed its port %v before kube-proxy's rules stopped listing it", p.name, p.iptLastSeen.Sub(p.draining).Round(time.Millisecond))
		}
	}
}

// oneReplica edits a manifest of localManifest: one replica, whose
// initialisation takes init.
func oneReplica(t *testing.T, manifest []byte, init time.Duration) []byte {
	dec := yaml.NewDecoder(bytes.NewReader(manifest))
	var out bytes.Buffer
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		if doc == nil {
			continue
		}
		if doc["kind"] == "Deployment" {
			spec := doc["spec"].(map[string]any)
			spec["replicas"] = 1
			for _, c := range spec["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any) {
				c := c.(map[string]any)
				c["args"] = append(c["args"].([]any), "-init-delay="+init.String())
			}
		}
		b, err := yaml.Marshal(doc)
		require.NoError(t, err)
		out.WriteString("---\n")
		out.Write(b)
	}
	return out.Bytes()
}
