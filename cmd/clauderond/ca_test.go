package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCARotateCommand(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	cfg := writeConfig(t, "state_dir: "+state+"\nmetrics:\n  address: \"\"\n")
	out, err := execute(t, "--config", cfg, "ca", "rotate")
	if err != nil {
		t.Fatalf("first rotate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "anthropic.com") || strings.Contains(out, "previous root") {
		t.Errorf("first rotate (creates) output:\n%s", out)
	}
	out, err = execute(t, "--config", cfg, "ca", "rotate", "--grace", "1h")
	if err != nil {
		t.Fatalf("second rotate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "previous root") || !strings.Contains(out, "restart clauderond") {
		t.Errorf("second rotate output:\n%s", out)
	}
	pem, err := os.ReadFile(filepath.Join(state, "proxy-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(pem, []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Errorf("proxy-ca.pem holds %d certificates, want new + previous", n)
	}
}
