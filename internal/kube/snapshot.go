package kube

import "slices"

// A Snapshot is what the EndpointSlices say of the pod at one moment.
type Snapshot struct {
	// Listed says that a slice has listed one of the pod's addresses
	// since the watch began: a pod listed once and no longer was removed
	// from its Services, and a pod never listed is not one any Service
	// selects, or has an address the slices do not know.
	Listed bool
	// Routed says that a Service routes to the pod now, as kube-proxy
	// does: to its ready endpoints, or, when it has none, to those that
	// are serving and terminating (KEP-1669, ProxyTerminatingEndpoints,
	// Kubernetes 1.26 and later).
	Routed bool
	// Alone names the Services that list the pod and have no other ready
	// endpoint, sorted: the pod is their last endpoint, and turning its
	// readiness off would leave them no endpoint at all.
	Alone []string
	// Replacing says that each Service of Alone has another endpoint that
	// is starting: not ready and not terminating, as a replacement is
	// from the moment it has an address until its readiness probe passes.
	Replacing bool
}

// slice is what the watch keeps of an EndpointSlice.
type slice struct {
	service   string // the Service it belongs to, or "slice NAME" for none
	endpoints []endpoint
}

type endpoint struct {
	mine                        bool // lists one of the pod's addresses
	ready, serving, terminating bool
}

// snapshotOf returns what slices say of the pod now; Listed says only
// whether they list it now.
func snapshotOf(all map[string]slice) Snapshot {
	listed, routed := route(all)
	alone, replacing := lastOf(all)
	return Snapshot{Listed: listed, Routed: routed, Alone: alone, Replacing: replacing}
}

// route reports whether any of slices lists the pod, and whether any
// routes to it. A Service routes to the pod while its endpoint is ready,
// or, as kube-proxy falls back to when the Service has no ready endpoint
// left, serving and terminating.
func route(slices map[string]slice) (listed, routed bool) {
	type service struct{ anyReady, mineReady, mineFallback, listed bool }
	services := make(map[string]*service)
	for _, s := range slices {
		sv := services[s.service]
		if sv == nil {
			sv = new(service)
			services[s.service] = sv
		}
		for _, e := range s.endpoints {
			sv.anyReady = sv.anyReady || e.ready
			if e.mine {
				sv.listed = true
				sv.mineReady = sv.mineReady || e.ready
				sv.mineFallback = sv.mineFallback || (e.serving && e.terminating)
			}
		}
	}
	for _, sv := range services {
		listed = listed || sv.listed
		routed = routed || sv.mineReady || (sv.mineFallback && !sv.anyReady)
	}
	return listed, routed
}

// lastOf returns the Services that list the pod and have no other ready
// endpoint, sorted, and whether each of them has another endpoint that is
// starting.
func lastOf(all map[string]slice) (alone []string, replacing bool) {
	type service struct{ listed, otherReady, otherStarting bool }
	services := make(map[string]*service)
	for _, s := range all {
		sv := services[s.service]
		if sv == nil {
			sv = new(service)
			services[s.service] = sv
		}
		for _, e := range s.endpoints {
			switch {
			case e.mine:
				sv.listed = true
			case e.ready:
				sv.otherReady = true
			case !e.terminating:
				sv.otherStarting = true
			}
		}
	}
	replacing = true
	for name, sv := range services {
		if sv.listed && !sv.otherReady {
			alone = append(alone, name)
			replacing = replacing && sv.otherStarting
		}
	}
	slices.Sort(alone)
	return alone, replacing && len(alone) > 0
}
