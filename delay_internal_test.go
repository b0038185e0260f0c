package lameduck

import (
	"testing"
	"time"
)

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
