package ratelog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// lines decodes the JSON lines written so far.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestHandler_DropsOverBudgetAndCountsThemOnTheNextLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(New(slog.NewJSONHandler(&buf, nil), Config{PerSecond: 1, Burst: 3}))
		for i := range 10 {
			log.Warn("refused", "i", i)
		}
		if got := len(lines(t, &buf)); got != 3 {
			t.Fatalf("%d lines written from a burst of 10, want 3 (the burst)", got)
		}
		time.Sleep(time.Second)
		log.Warn("refused", "i", 10)
		all := lines(t, &buf)
		last := all[len(all)-1]
		if last["i"] != float64(10) || last[SuppressedKey] != float64(7) {
			t.Errorf("line after the refill = %v, want i=10 with %s=7", last, SuppressedKey)
		}
		for _, l := range all[:3] {
			if _, ok := l[SuppressedKey]; ok {
				t.Errorf("line %v carries %s though nothing was dropped before it", l, SuppressedKey)
			}
		}
	})
}

func TestHandler_OneBudgetPerComponentAndLevel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		base := slog.New(New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), Config{PerSecond: 1, Burst: 2}))
		tls := base.With("component", "tlsmitm")
		tlsAgain := base.With("component", "tlsmitm").WithGroup("conn")
		dns := base.With("component", "dnsredir")
		for range 5 {
			tls.Warn("refused")      // tlsmitm/WARN: 2 of 5
			tlsAgain.Warn("refused") // the same budget: 0 more
			dns.Debug("dns query")   // dnsredir/DEBUG: 2 of 5, whatever tlsmitm did
		}
		tls.Error("panic serving intercepted request") // tlsmitm/ERROR: its own budget
		count := map[string]int{}
		for _, l := range lines(t, &buf) {
			count[l["component"].(string)+" "+l["level"].(string)]++
		}
		want := map[string]int{"tlsmitm WARN": 2, "dnsredir DEBUG": 2, "tlsmitm ERROR": 1}
		for k, n := range want {
			if count[k] != n {
				t.Errorf("%s: %d lines, want %d (all: %v)", k, count[k], n, count)
			}
		}
		// The next admitted warning counts the dropped warnings only.
		time.Sleep(time.Second)
		tls.Warn("refused")
		all := lines(t, &buf)
		if last := all[len(all)-1]; last[SuppressedKey] != float64(8) {
			t.Errorf("line after the refill = %v, want %s=8 (3 + 5 dropped tlsmitm warnings)", last, SuppressedKey)
		}
	})
}

func TestHandler_LinesBelowTheLevelSpendNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}), Config{PerSecond: 1, Burst: 1}))
		for range 100 {
			log.Debug("per-query detail")
		}
		log.Info("the one that counts")
		all := lines(t, &buf)
		if len(all) != 1 || all[0]["msg"] != "the one that counts" {
			t.Errorf("lines = %v, want only the info line (debug lines are not enabled and cost nothing)", all)
		}
		if _, ok := all[0][SuppressedKey]; ok {
			t.Errorf("disabled lines counted as suppressed: %v", all[0])
		}
	})
}

func TestNew_ZeroConfigTakesTheDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(New(slog.NewJSONHandler(&buf, nil), Config{}))
		for range DefaultBurst + 10 {
			log.Warn("x")
		}
		if got := len(lines(t, &buf)); got != DefaultBurst {
			t.Errorf("%d lines, want the default burst %d", got, DefaultBurst)
		}
	})
}
