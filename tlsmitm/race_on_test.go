//go:build race

package tlsmitm

// raceEnabled: the race detector roughly doubles heap and stacks, so heap
// bounds are logged but not enforced.
const raceEnabled = true
