//go:build !race

package tlsmitm

const raceEnabled = false
