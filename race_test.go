//go:build race

package lameduck_test

// raceEnabled is set when the tests run with -race, so that the programs
// they build are built with it too.
const raceEnabled = true
