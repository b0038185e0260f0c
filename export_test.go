package lameduck

import (
	"net/http"
	"net/netip"
	"time"
)

// WithKubernetesAPI makes an adaptive drain delay watch the EndpointSlices
// of namespace through the API at base, as the pod with addrs would, instead
// of the pod's own cluster.
func WithKubernetesAPI(base string, client *http.Client, namespace string, addrs ...netip.Addr) Option {
	return optionFunc(func(o *options) {
		o.delay.kube = &kubeAPI{
			base: base, client: client, namespace: namespace, addrs: addrs,
			token: func() (string, error) { return "the-token", nil },
		}
	})
}

// Turn returns when d's turn to leave is, once the drain has given it one.
func (d *Departure) Turn() time.Time {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	return d.at
}
