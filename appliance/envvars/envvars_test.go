package envvars

import (
	"maps"
	"testing"
)

func TestMap(t *testing.T) {
	got := Map([]string{"A=1", "B=x=y", "A=2", "NOEQUALS", "EMPTY=", "=nameless"})
	want := map[string]string{"A": "1", "B": "x=y", "EMPTY": "", "": "nameless"}
	if !maps.Equal(got, want) {
		t.Fatalf("Map = %v, want %v (first duplicate wins, value keeps its '=')", got, want)
	}
	if m := Map(nil); len(m) != 0 {
		t.Fatalf("Map(nil) = %v, want empty: nil is not the process environment", m)
	}
}
