package config

import (
	"strings"
	"testing"
)

// TestLoad_SectionNamedEnvDoesNotShadowTheSection: CLAUDERON_SOCKET is the
// CLI's variable (the socket path); in the daemon's environment (sudo -E,
// a container image) it must not replace the whole socket: section, whose
// keys are CLAUDERON_SOCKET_PATH and so on.
func TestLoad_SectionNamedEnvDoesNotShadowTheSection(t *testing.T) {
	cfg, err := load(t, "socket: {path: /run/clauderon/d.sock}\n", map[string]string{"CLAUDERON_SOCKET": "/elsewhere.sock"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Socket.Path != "/run/clauderon/d.sock" {
		t.Errorf("socket.path = %q, want the file's /run/clauderon/d.sock", cfg.Socket.Path)
	}
}

// TestLoad_UnknownKeyWithoutValueIsAnError: "foo:" (null) is still an
// unknown key; a bare known section is not.
func TestLoad_UnknownKeyWithoutValueIsAnError(t *testing.T) {
	for text, key := range map[string]string{"foo:\n": "foo", "network:\n  foo:\n": "network.foo", "egres:\n  mode:\n": "egres.mode"} {
		if _, err := load(t, text, nil); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: err = %v, want one naming %s", text, err, key)
		}
	}
	if _, err := load(t, "network:\n", nil); err != nil {
		t.Errorf("a bare known section: %v", err)
	}
}

// TestEnvMap_FirstDuplicateWins: a variable given twice reads as
// os.Getenv reads it (the first), as the injector's parser does too.
func TestEnvMap_FirstDuplicateWins(t *testing.T) {
	if got := envMap([]string{"CLAUDERON_STATE_DIR=/first", "X", "CLAUDERON_STATE_DIR=/second"})["CLAUDERON_STATE_DIR"]; got != "/first" {
		t.Errorf("envMap = %q, want the first value", got)
	}
}
