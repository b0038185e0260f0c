package kube

import (
	"fmt"
	"testing"
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
