package lameduck

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// route follows kube-proxy: a Service sends traffic to ready endpoints, and
// to serving, terminating ones only when none is ready.
func TestRoute(t *testing.T) {
	var (
		mineReady       = endpoint{mine: true, ready: true, serving: true}
		mineTerminating = endpoint{mine: true, terminating: true}
		mineFallback    = endpoint{mine: true, serving: true, terminating: true}
		otherReady      = endpoint{ready: true, serving: true}
		otherFallback   = endpoint{serving: true, terminating: true}
	)
	for _, tt := range []struct {
		name           string
		slices         map[string]slice
		listed, routed bool
	}{
		{"no slice", nil, false, false},
		{"another pod's", map[string]slice{"a": {"web", []endpoint{otherReady}}}, false, false},
		{"ready", map[string]slice{"a": {"web", []endpoint{mineReady, otherReady}}}, true, true},
		{"terminating", map[string]slice{"a": {"web", []endpoint{mineTerminating, otherReady}}}, true, false},
		{"serving and terminating, another ready", map[string]slice{"a": {"web", []endpoint{mineFallback, otherReady}}}, true, false},
		{"serving and terminating, none ready", map[string]slice{"a": {"web", []endpoint{mineFallback, otherFallback}}}, true, true},
		{"another ready in another slice of the Service", map[string]slice{
			"a": {"web", []endpoint{mineFallback}}, "b": {"web", []endpoint{otherReady}}}, true, false},
		{"another ready in another Service", map[string]slice{
			"a": {"web", []endpoint{mineFallback}}, "b": {"api", []endpoint{otherReady}}}, true, true},
		{"ready in one Service of two", map[string]slice{
			"a": {"web", []endpoint{mineTerminating, otherReady}}, "b": {"api", []endpoint{mineReady}}}, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			listed, routed := route(tt.slices)
			if listed != tt.listed || routed != tt.routed {
				t.Errorf("route = listed %v, routed %v; want %v, %v", listed, routed, tt.listed, tt.routed)
			}
		})
	}
}

func TestPodAddrs(t *testing.T) {
	t.Run("from the downward API", func(t *testing.T) {
		t.Setenv("POD_IP", "10.244.0.7")
		t.Setenv("POD_IPS", "10.244.0.7, fd00::7")
		addrs, err := podAddrs()
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(addrs); got != "[10.244.0.7 10.244.0.7 fd00::7]" {
			t.Errorf("addresses %s", got)
		}
	})
	t.Run("not an address", func(t *testing.T) {
		t.Setenv("POD_IP", "status.podIP")
		t.Setenv("POD_IPS", "")
		_, err := podAddrs()
		if err == nil || !strings.Contains(err.Error(), `POD_IP is "status.podIP", not an IP address; set it from the downward API (fieldRef: status.podIP)`) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("from the interfaces", func(t *testing.T) {
		t.Setenv("POD_IP", "")
		t.Setenv("POD_IPS", "")
		addrs, err := podAddrs()
		for _, a := range addrs {
			if a.IsLoopback() {
				t.Errorf("loopback address %v", a)
			}
		}
		if err != nil && !strings.Contains(err.Error(), "set POD_IP") {
			t.Errorf("error %v", err)
		}
	})
}

func TestInCluster(t *testing.T) {
	t.Run("outside Kubernetes", func(t *testing.T) {
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		api, err := inCluster()
		if api != nil || err != nil {
			t.Errorf("inCluster = %v, %v; want nothing", api, err)
		}
	})
	t.Run("without a service account", func(t *testing.T) {
		if _, err := os.Stat(serviceAccountDir); err == nil {
			t.Skip("this machine has a service account mounted")
		}
		t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
		t.Setenv("KUBERNETES_SERVICE_PORT", "443")
		_, err := inCluster()
		if err == nil || !strings.Contains(err.Error(), "automountServiceAccountToken: true") {
			t.Errorf("error %v", err)
		}
	})
}

// lastOf names the Services that list the pod and have no other ready
// endpoint, and whether another of their endpoints is starting.
func TestLastOf(t *testing.T) {
	var (
		mineFallback  = endpoint{mine: true, serving: true, terminating: true}
		otherReady    = endpoint{ready: true, serving: true}
		otherStarting = endpoint{}
		otherLeaving  = endpoint{serving: true, terminating: true}
	)
	for _, tt := range []struct {
		name      string
		slices    map[string]slice
		alone     string
		replacing bool
	}{
		{"no slice", nil, "[]", false},
		{"another ready", map[string]slice{"a": {"web", []endpoint{mineFallback, otherReady}}}, "[]", false},
		{"alone", map[string]slice{"a": {"web", []endpoint{mineFallback}}}, "[web]", false},
		{"alone, another leaving", map[string]slice{"a": {"web", []endpoint{mineFallback, otherLeaving}}}, "[web]", false},
		{"alone, a replacement starting", map[string]slice{"a": {"web", []endpoint{mineFallback, otherStarting}}}, "[web]", true},
		{"the replacement in another slice", map[string]slice{
			"a": {"web", []endpoint{mineFallback}}, "b": {"web", []endpoint{otherStarting}}}, "[web]", true},
		{"another ready in another slice", map[string]slice{
			"a": {"web", []endpoint{mineFallback}}, "b": {"web", []endpoint{otherReady}}}, "[]", false},
		{"two Services, one with no replacement", map[string]slice{
			"a": {"web", []endpoint{mineFallback, otherStarting}}, "b": {"api", []endpoint{mineFallback}}}, "[api web]", false},
		{"a Service that does not list the pod", map[string]slice{
			"a": {"web", []endpoint{mineFallback, otherReady}}, "b": {"db", []endpoint{otherStarting}}}, "[]", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			alone, replacing := lastOf(tt.slices)
			if got := fmt.Sprint(alone); got != tt.alone || replacing != tt.replacing {
				t.Errorf("lastOf = %s, replacing %v; want %s, %v", got, replacing, tt.alone, tt.replacing)
			}
		})
	}
}

// A hold that makes the drain begin after the longest delay shrinks the
// departure window in proportion to the time left.
func TestDepartureWindow(t *testing.T) {
	at := func(s float64) time.Time { return time.Unix(0, 0).Add(time.Duration(s * float64(time.Second))) }
	for _, tt := range []struct {
		name string
		now  float64
		want time.Duration
	}{
		{"before the longest delay ends", 3, 7500 * time.Millisecond},
		{"as it ends", 10, 7500 * time.Millisecond},
		{"10s of drain left of 15", 15, 5 * time.Second},
		{"5s left", 20, 2500 * time.Millisecond},
		{"past the deadline", 26, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := departureWindow(7500*time.Millisecond, at(10), at(tt.now), at(25)); got != tt.want {
				t.Errorf("departureWindow = %v; want %v", got, tt.want)
			}
		})
	}
}
