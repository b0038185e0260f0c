// Package kubernetes holds example manifests; its test checks that their
// numbers agree with the programs' flags and with lameduck's budget.
package kubernetes

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/lameduck/lameduck"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(loadEnv); cfg != "" {
		// The binary is the cluster test's load generator (see startLoad).
		os.Exit(runLoad(cfg, os.Stdin, os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

type manifest struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	// Of a Role.
	Rules []struct {
		APIGroups []string `yaml:"apiGroups"`
		Resources []string `yaml:"resources"`
		Verbs     []string `yaml:"verbs"`
	} `yaml:"rules"`
	// Of a RoleBinding.
	RoleRef struct {
		Kind string `yaml:"kind"`
		Name string `yaml:"name"`
	} `yaml:"roleRef"`
	Subjects []subject `yaml:"subjects"`
	Spec     struct {
		Strategy struct {
			RollingUpdate struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata struct {
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				ServiceAccountName            string      `yaml:"serviceAccountName"`
				TerminationGracePeriodSeconds *int        `yaml:"terminationGracePeriodSeconds"`
				Containers                    []container `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type container struct {
	Args  []string `yaml:"args"`
	Env   []envVar `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
}

type subject struct {
	Kind      string `yaml:"kind"`
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
}

type envVar struct {
	Name      string `yaml:"name"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	GRPC *struct {
		Port any `yaml:"port"`
	} `yaml:"grpc"`
	TimeoutSeconds int `yaml:"timeoutSeconds"`
}

// port resolves a probe's port, a number or the name of a container port.
func (c container) port(t *testing.T, p any) int {
	switch p := p.(type) {
	case int:
		return p
	case string:
		for _, cp := range c.Ports {
			if cp.Name == p {
				return cp.ContainerPort
			}
		}
		t.Fatalf("probe port %q names no container port", p)
	}
	t.Fatalf("probe port %v is neither a number nor a name", p)
	return 0
}

func portOf(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

func TestManifestsMatchTheFlags(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(file)
			require.NoError(t, err)
			dec := yaml.NewDecoder(bytes.NewReader(data))
			var docs []manifest
			for {
				var m manifest
				if err := dec.Decode(&m); errors.Is(err, io.EOF) {
					break
				} else {
					require.NoError(t, err)
				}
				docs = append(docs, m)
			}
			deployments := 0
			for _, m := range docs {
				if m.Kind != "Deployment" {
					continue
				}
				deployments++
				spec := m.Spec.Template.Spec
				require.NotNil(t, spec.TerminationGracePeriodSeconds, "set terminationGracePeriodSeconds explicitly")
				assert.Equal(t, 0, m.Spec.Strategy.RollingUpdate.MaxUnavailable, "capacity must not drop during the update")
				require.Len(t, spec.Containers, 1)
				c := spec.Containers[0]

				fs := flag.NewFlagSet(file, flag.ContinueOnError)
				addr := fs.String("addr", "", "")
				probeAddr := fs.String("probe-addr", "", "")
				adminAddr := fs.String("admin-addr", "", "")
				delay := fs.Duration("drain-delay", lameduck.DefaultDrainDelay, "")
				quiet := fs.Duration("drain-quiet", 0, "")
				minDelay := fs.Duration("drain-min", 0, "")
				grace := fs.Duration("grace-period", lameduck.DefaultGracePeriod, "")
				require.NoError(t, fs.Parse(c.Args))

				assert.Equal(t, time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second, *grace,
					"-grace-period must equal terminationGracePeriodSeconds")
				delayOpt := lameduck.WithDrainDelay(*delay)
				if *quiet > 0 {
					delayOpt = lameduck.WithAdaptiveDrainDelay(*minDelay, *quiet, *delay)
					assert.Equal(t, manifestQuiet, *quiet, "the rig's test bounds a pod's stay with the manifests' -drain-quiet")
					// The adaptive delay's evidence: the pod's address in
					// its namespace's EndpointSlices, which its service
					// account may read.
					assert.True(t, slices.ContainsFunc(c.Env, func(e envVar) bool {
						return e.Name == "POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
							e.ValueFrom.FieldRef.FieldPath == "status.podIP"
					}), "an adaptive drain delay needs POD_IP from the downward API (fieldRef status.podIP)")
					checkCanWatchEndpointSlices(t, docs, spec.ServiceAccountName)
				}
				_, err := lameduck.New(delayOpt, lameduck.WithGracePeriod(*grace))
				assert.NoError(t, err, "the flags must fit lameduck's budget")

				httpPort := portOf(t, *addr)
				if *probeAddr != "" {
					httpPort = portOf(t, *probeAddr)
				}
				if *adminAddr != "" {
					httpPort = portOf(t, *adminAddr)
				}
				// Prometheus scrapes the admin listener, the only one that
				// answers through the drain.
				if ann := m.Spec.Template.Metadata.Annotations; ann["prometheus.io/scrape"] == "true" {
					require.NotEmpty(t, *adminAddr, "a scraped pod needs -admin-addr")
					assert.Equal(t, strconv.Itoa(portOf(t, *adminAddr)), ann["prometheus.io/port"], "prometheus.io/port is -admin-addr's")
					assert.Equal(t, "/metrics", ann["prometheus.io/path"])
				}
				for name, p := range map[string]*probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
					require.NotNil(t, p, "%s probe", name)
					switch {
					case p.HTTPGet != nil:
						want := map[string]string{"readiness": "/readyz", "liveness": "/livez"}[name]
						assert.Equal(t, want, p.HTTPGet.Path, "%s probe path", name)
						assert.Equal(t, httpPort, c.port(t, p.HTTPGet.Port), "%s probe port serves the HTTP probes", name)
					case p.GRPC != nil:
						// -addr closes when the drain begins; the admin
						// listener answers until the process exits.
						assert.Empty(t, *adminAddr, "%s probe: with -admin-addr, probe /readyz and /livez on it, not gRPC on -addr", name)
						assert.Equal(t, portOf(t, *addr), c.port(t, p.GRPC.Port), "%s gRPC probe port is -addr's", name)
					default:
						t.Errorf("%s probe is neither httpGet nor grpc", name)
					}
					assert.GreaterOrEqual(t, p.TimeoutSeconds, int(lameduck.DefaultCheckTimeout/time.Second),
						"%s probe must wait for lameduck's check timeout", name)
				}
			}
			assert.Positive(t, deployments)
		})
	}
}

// checkCanWatchEndpointSlices checks that the manifest's documents give the
// service account sa the right to get, list and watch the EndpointSlices of
// its namespace: the ServiceAccount, a Role with that rule, and a
// RoleBinding of the Role to the account.
func checkCanWatchEndpointSlices(t *testing.T, docs []manifest, sa string) {
	t.Helper()
	if !assert.NotEmpty(t, sa, "an adaptive drain delay needs a serviceAccountName allowed to watch endpointslices") {
		return
	}
	assert.True(t, slices.ContainsFunc(docs, func(m manifest) bool { return m.Kind == "ServiceAccount" && m.Metadata.Name == sa }),
		"no ServiceAccount %q in the manifest", sa)
	roles := map[string]bool{} // the Roles that allow it
	for _, m := range docs {
		if m.Kind != "Role" {
			continue
		}
		for _, r := range m.Rules {
			if slices.Contains(r.APIGroups, "discovery.k8s.io") && slices.Contains(r.Resources, "endpointslices") &&
				slices.Contains(r.Verbs, "get") && slices.Contains(r.Verbs, "list") && slices.Contains(r.Verbs, "watch") {
				roles[m.Metadata.Name] = true
			}
		}
	}
	bound := slices.ContainsFunc(docs, func(m manifest) bool {
		return m.Kind == "RoleBinding" && m.RoleRef.Kind == "Role" && roles[m.RoleRef.Name] &&
			slices.ContainsFunc(m.Subjects, func(s subject) bool {
				// A namespace, if any, must be the binding's own; the
				// manifests leave it out.
				return s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == ""
			})
	})
	assert.True(t, bound, "no RoleBinding gives ServiceAccount %q a Role with get, list and watch on endpointslices (apiGroup discovery.k8s.io)", sa)
}
