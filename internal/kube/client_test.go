package kube_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/internal/kube"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestPodAddrs(t *testing.T) {
	t.Run("from the downward API", func(t *testing.T) {
		t.Setenv("POD_IP", "10.244.0.7")
		t.Setenv("POD_IPS", "10.244.0.7, fd00::7")
		addrs, err := kube.PodAddrs()
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
		_, err := kube.PodAddrs()
		if err == nil || !strings.Contains(err.Error(), `POD_IP is "status.podIP", not an IP address; set it from the downward API (fieldRef: status.podIP)`) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("from the interfaces", func(t *testing.T) {
		t.Setenv("POD_IP", "")
		t.Setenv("POD_IPS", "")
		addrs, err := kube.PodAddrs()
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
		api, err := kube.InCluster()
		if api != nil || err != nil {
			t.Errorf("inCluster = %v, %v; want nothing", api, err)
		}
	})
	t.Run("without a service account", func(t *testing.T) {
		if _, err := os.Stat(kube.ServiceAccountDir); err == nil {
			t.Skip("this machine has a service account mounted")
		}
		t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
		t.Setenv("KUBERNETES_SERVICE_PORT", "443")
		_, err := kube.InCluster()
		if err == nil || !strings.Contains(err.Error(), "automountServiceAccountToken: true") {
			t.Errorf("error %v", err)
		}
	})
}
