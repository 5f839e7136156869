//go:build race

package agent

// raceEnabled: the tests run under the race detector.
const raceEnabled = true
