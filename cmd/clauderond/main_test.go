package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func execute(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigCommand_PrintsEffectiveConfig(t *testing.T) {
	state := t.TempDir()
	p := writeConfig(t, "state_dir: "+state+"\nnetwork:\n  subnet: 10.213.7.0/24\negress:\n  allow: [deb.debian.org]\n")
	out, err := execute(t, "--config", p, "config")
	if err != nil {
		t.Fatalf("clauderond config: %v\n%s", err, out)
	}
	for _, want := range []string{"state_dir: " + state, "10.213.7.0/24", "deb.debian.org", "tls_port: 8443"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestConfigCommand_BadFileNamesTheKey(t *testing.T) {
	p := writeConfig(t, "state_dir: /tmp/x\nnetwork:\n  subnet: 10.0.0.0/33\n")
	_, err := execute(t, "--config", p, "config")
	if err == nil || !strings.Contains(err.Error(), "network.subnet") {
		t.Errorf("err = %v, want one naming network.subnet", err)
	}
}

func TestVersionCommand(t *testing.T) {
	out, err := execute(t, "version")
	if err != nil || !strings.HasPrefix(out, "clauderond ") {
		t.Errorf("version = %q, %v", out, err)
	}
}

func TestRoot_RejectsArguments(t *testing.T) {
	if _, err := execute(t, "stray"); err == nil {
		t.Error("clauderond stray: want an error")
	}
}
