package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"time"
)

// Watch lists the EndpointSlices and follows their changes until ctx
// ends, calling report with a [Snapshot] after the list and after every
// change, from Watch's goroutine. A dropped watch is resumed from the
// last resource version, a few times in a row at most; a version the API
// no longer has is listed again. Watch returns nil once ctx ends, or the
// error it gave up on: one before the first snapshot, an answer of the
// API other than success (forbidden, unauthorized), or too many drops in
// a row.
func (c *Client) Watch(ctx context.Context, report func(Snapshot)) error {
	w := &watch{c: c, slices: make(map[string]slice), report: report}
	failures := 0
	rv := ""
	for ctx.Err() == nil {
		var err error
		if rv == "" {
			rv, err = w.list(ctx)
		} else {
			rv, err = w.watch(ctx, rv)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			failures = 0
			continue
		case errors.Is(err, errGone):
			rv = "" // the resource version is too old: list again
			continue
		}
		var se *statusError
		if !w.reported || errors.As(err, &se) || failures == watchRetries {
			// Forbidden, unauthorized, unreachable: no evidence to
			// wait for. A dropped watch is resumed a few times.
			return err
		}
		failures++
		t := time.NewTimer(watchBackoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// watch is one call of Watch: the slices it has seen, by name.
type watch struct {
	c        *Client
	slices   map[string]slice
	listed   bool // a slice has listed the pod since Watch began
	reported bool // a snapshot has been reported
	report   func(Snapshot)
}

// list reads every slice, and returns the resource version to watch from.
func (w *watch) list(ctx context.Context) (string, error) {
	resp, err := w.c.get(ctx, w.c.url(url.Values{}))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []endpointSlice `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return "", fmt.Errorf("reading the EndpointSlices: %w", err)
	}
	clear(w.slices)
	for _, s := range list.Items {
		w.slices[s.Metadata.Name] = w.parse(s)
	}
	w.update()
	return list.Metadata.ResourceVersion, nil
}

// watch follows the changes after resource version rv until the API ends
// the watch, and returns the last version seen.
func (w *watch) watch(ctx context.Context, rv string) (string, error) {
	resp, err := w.c.get(ctx, w.c.url(url.Values{"watch": {"1"}, "resourceVersion": {rv}, "allowWatchBookmarks": {"true"}}))
	if err != nil {
		return rv, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) && ctx.Err() == nil {
				return rv, nil // the API ends watches now and then: resume
			}
			return rv, fmt.Errorf("watching the EndpointSlices: %w", err)
		}
		if ev.Type == "ERROR" {
			var st apiStatus
			json.Unmarshal(ev.Object, &st) //nolint:errcheck // the code says enough without it
			if st.Code == http.StatusGone {
				return rv, errGone
			}
			return rv, &statusError{code: st.Code, msg: st.Message, ns: w.c.Namespace}
		}
		var s endpointSlice
		if err := json.Unmarshal(ev.Object, &s); err != nil {
			return rv, fmt.Errorf("reading an EndpointSlice: %w", err)
		}
		if s.Metadata.ResourceVersion != "" {
			rv = s.Metadata.ResourceVersion
		}
		switch ev.Type {
		case "ADDED", "MODIFIED":
			w.slices[s.Metadata.Name] = w.parse(s)
		case "DELETED":
			delete(w.slices, s.Metadata.Name)
		default: // BOOKMARK: only the resource version
			continue
		}
		w.update()
	}
}

// update reports what the slices say now.
func (w *watch) update() {
	s := snapshotOf(w.slices)
	w.listed = w.listed || s.Listed
	s.Listed = w.listed
	w.reported = true
	w.report(s)
}

// endpointSlice is the part of a discovery.k8s.io/v1 EndpointSlice the
// watch reads.
type endpointSlice struct {
	Metadata struct {
		Name            string            `json:"name"`
		ResourceVersion string            `json:"resourceVersion"`
		Labels          map[string]string `json:"labels"`
	} `json:"metadata"`
	Endpoints []struct {
		Addresses  []string `json:"addresses"`
		Conditions struct {
			Ready       *bool `json:"ready"`
			Serving     *bool `json:"serving"`
			Terminating *bool `json:"terminating"`
		} `json:"conditions"`
	} `json:"endpoints"`
}

// parse keeps of s what the snapshot needs.
func (w *watch) parse(s endpointSlice) slice {
	sl := slice{service: s.Metadata.Labels["kubernetes.io/service-name"]}
	if sl.service == "" {
		sl.service = "slice " + s.Metadata.Name
	}
	for _, e := range s.Endpoints {
		c := e.Conditions
		// As the API defines them: ready unset means ready, serving
		// unset means as ready, terminating unset means not.
		ready := c.Ready == nil || *c.Ready
		ep := endpoint{ready: ready, serving: ready, terminating: c.Terminating != nil && *c.Terminating}
		if c.Serving != nil {
			ep.serving = *c.Serving
		}
		for _, a := range e.Addresses {
			if addr, err := netip.ParseAddr(a); err == nil && w.isMine(addr.Unmap()) {
				ep.mine = true
			}
		}
		sl.endpoints = append(sl.endpoints, ep)
	}
	return sl
}

func (w *watch) isMine(a netip.Addr) bool {
	for _, m := range w.c.Addrs {
		if a == m {
			return true
		}
	}
	return false
}
