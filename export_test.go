package lameduck

import (
	"net/netip"
	"time"

	"github.com/lameduck/lameduck/internal/kube/kubetest"
)

// WithKubernetesAPI makes an adaptive drain delay watch the EndpointSlices
// that api serves, as the pod with addrs would, instead of the pod's own
// cluster's.
func WithKubernetesAPI(api *kubetest.API, addrs ...netip.Addr) Option {
	return optionFunc(func(o *options) { o.kube = api.Client(addrs...) })
}

// Turn returns when d's turn to leave is, once the drain has given it one.
func (d *Departure) Turn() time.Time {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	return d.at
}
