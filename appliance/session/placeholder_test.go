package session

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/injector"
	"github.com/docker/docker/api/types/container"
)

// testSuffix computes a suffix from the key file, independently of the
// manager: hex(HMAC-SHA256(key, identity)[:5]).
func testSuffix(t *testing.T, dir, identity string) string {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(dir, PlaceholderKeyName))
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(identity))
	return hex.EncodeToString(mac.Sum(nil)[:5])
}

func envValue(env []string, k string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, k+"="); ok {
			return v
		}
	}
	return ""
}

// runEnv returns the -e values of RunArgs and its run id.
func runEnv(t *testing.T, ra api.RunArgs) (env []string, runID string) {
	t.Helper()
	for i := 0; i+1 < len(ra.Args); i++ {
		switch ra.Args[i] {
		case "-e":
			env = append(env, ra.Args[i+1])
		case "--label":
			if v, ok := strings.CutPrefix(ra.Args[i+1], LabelRun+"="); ok {
				runID = v
			}
		}
	}
	return env, runID
}

// Every session and every run gets placeholders of its own, recognised by
// the injector, and the manager names the container each suffix was handed
// to, across a restart too.
func TestPlaceholders_EachContainerGetsItsOwn(t *testing.T) {
	ctx := context.Background()
	d := newFakeDocker()
	dir := stateDir(t)
	m := newManager(t, d, dir)
	seen := map[string]string{} // suffix → who
	check := func(who string, env []string) string {
		t.Helper()
		gh := envValue(env, "GITHUB_TOKEN")
		sfx, ok := injector.PlaceholderSuffix(gh)
		if !ok {
			t.Fatalf("%s: GITHUB_TOKEN=%q is not a per-container placeholder", who, gh)
		}
		for k, ref := range map[string]string{"CLAUDE_CODE_OAUTH_TOKEN": injector.PlaceholderAnthropicOAuth,
			"OPENAI_API_KEY": injector.PlaceholderOpenAI, "GITHUB_TOKEN": injector.PlaceholderGitHub} {
			if got := envValue(env, k); got != ref+"-"+sfx || !injector.IsPlaceholder(got) {
				t.Errorf("%s: %s=%q, want %s-%s", who, k, got, ref, sfx)
			}
		}
		if prev, dup := seen[sfx]; dup {
			t.Errorf("%s and %s share the suffix %s", who, prev, sfx)
		}
		seen[sfx] = who
		return sfx
	}

	var sessSfx []string
	for _, name := range []string{"one", "two"} {
		se, err := m.Create(ctx, api.CreateRequest{Name: name, Prompt: "p"})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := d.find(ContainerName(name))
		sfx := check("session "+name, c.cfg.Env)
		if want := testSuffix(t, dir, "session\x00"+ContainerName(name)+"\x00"+se.Owner); sfx != want {
			t.Errorf("session %s suffix %s, want HMAC(key, identity) %s", name, sfx, want)
		}
		if p, ok := m.Vouch(se.ContainerID); !ok || p.Placeholder != sfx {
			t.Errorf("Vouch(%s) = %+v, want Placeholder %s", name, p, sfx)
		}
		o, ok := m.PlaceholderOwner(ctx, sfx)
		if !ok || o.Session != name || o.ContainerID != se.ContainerID || o.Display() != ContainerName(name) || o.Owner != se.Owner {
			t.Errorf("PlaceholderOwner(%s) = %+v, %v", name, o, ok)
		}
		sessSfx = append(sessSfx, sfx)
	}

	var runSfx []string
	var runIDs []string
	for i := range 2 {
		ra, err := m.RunArgs(ctx, api.RunRequest{Profile: "work"})
		if err != nil {
			t.Fatal(err)
		}
		env, id := runEnv(t, ra)
		sfx := check("run "+id, env)
		if want := testSuffix(t, dir, "run\x00"+id); sfx != want {
			t.Errorf("run %d suffix %s, want %s", i, sfx, want)
		}
		o, ok := m.PlaceholderOwner(ctx, sfx)
		if !ok || o.ContainerID != "" || o.Profile != "work" || strings.Contains(o.Display(), id) {
			t.Errorf("PlaceholderOwner(pending run) = %+v (%q), %v; want pending, never showing the run id", o, o.Display(), ok)
		}
		runSfx, runIDs = append(runSfx, sfx), append(runIDs, id)
	}
	// The first run's container shows up: its suffix now names it.
	resp, err := d.ContainerCreate(ctx, &container.Config{Image: "clauderon-agent:latest", Labels: map[string]string{LabelRun: runIDs[0]}}, &container.HostConfig{}, nil, nil, "run-one")
	if err != nil {
		t.Fatal(err)
	}
	m.BindRun(ctx, resp.ID, map[string]string{LabelRun: runIDs[0]})
	if p, ok := m.Vouch(resp.ID); !ok || p.Placeholder != runSfx[0] {
		t.Errorf("Vouch(run container) = %+v, want Placeholder %s", p, runSfx[0])
	}
	if o, ok := m.PlaceholderOwner(ctx, runSfx[0]); !ok || o.ContainerID != resp.ID || o.Display() != "run-one" {
		t.Errorf("PlaceholderOwner(bound run) = %+v (%q)", o, o.Display())
	}
	if _, ok := m.PlaceholderOwner(ctx, "0000000000"); ok {
		t.Error("an unissued suffix has an owner")
	}
	if _, ok := m.PlaceholderOwner(ctx, "not-a-suffix"); ok {
		t.Error("a malformed suffix has an owner")
	}

	// A restart rebuilds suffix → owner from db.sqlite and the same key.
	m.Close()
	m2 := newManager(t, d, dir)
	for i, sfx := range sessSfx {
		if o, ok := m2.PlaceholderOwner(ctx, sfx); !ok || o.Session != []string{"one", "two"}[i] {
			t.Errorf("after restart, PlaceholderOwner(session %d) = %+v, %v", i, o, ok)
		}
	}
	if o, ok := m2.PlaceholderOwner(ctx, runSfx[0]); !ok || o.ContainerID != resp.ID || o.Display() != "run-one" {
		t.Errorf("after restart, PlaceholderOwner(bound run) = %+v", o)
	}
	if o, ok := m2.PlaceholderOwner(ctx, runSfx[1]); !ok || o.ContainerID != "" {
		t.Errorf("after restart, PlaceholderOwner(pending run) = %+v, %v", o, ok)
	}
}

// placeholder.key: created 0600 with 32 bytes on first use, reused, never
// in a container's environment, arguments or mounts, and refused when it
// could have been read or replaced.
func TestPlaceholderKey_File(t *testing.T) {
	ctx := context.Background()
	d := newFakeDocker()
	dir := stateDir(t)
	m := newManager(t, d, dir)
	path := filepath.Join(dir, PlaceholderKeyName)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 || fi.Size() != 32 {
		t.Errorf("placeholder.key mode %v size %d, want -rw------- 32", fi.Mode(), fi.Size())
	}
	key, _ := os.ReadFile(path)
	if s := (placeholderKey{b: key}); strings.Contains(s.String(), hex.EncodeToString(key)) {
		t.Error("the key prints its bytes")
	}
	if _, err := m.Create(ctx, api.CreateRequest{Name: "k", Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	ra, err := m.RunArgs(ctx, api.RunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var everything []string
	everything = append(everything, ra.Args...)
	for _, c := range d.containers {
		everything = append(everything, c.cfg.Env...)
		for _, mnt := range c.hc.Mounts {
			everything = append(everything, mnt.Source)
		}
	}
	for _, s := range everything {
		if strings.Contains(s, PlaceholderKeyName) || strings.Contains(s, hex.EncodeToString(key)) || strings.Contains(s, string(key)) {
			t.Errorf("%q carries the placeholder key or its path", s)
		}
	}
	m.Close()
	if m2 := newManager(t, d, dir); m2.prov.key == nil || string(m2.prov.key.b) != string(key) {
		t.Error("a restart did not reuse placeholder.key")
	}

	refuse := func(name, want string, prepare func(path string)) {
		t.Helper()
		dir := stateDir(t)
		path := filepath.Join(dir, PlaceholderKeyName)
		prepare(path)
		_, err := New(ctx, Config{Docker: newFakeDocker(), Network: "clauderon", StateDir: dir, User: "1000:1000"})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: New = %v, want an error with %q", name, err, want)
		}
		if err != nil && strings.Contains(err.Error(), hex.EncodeToString(key)) {
			t.Errorf("%s: the error shows key bytes", name)
		}
	}
	good := make([]byte, 32)
	refuse("symlink", "symbolic link", func(p string) {
		target := filepath.Join(t.TempDir(), "k")
		os.WriteFile(target, good, 0o600)
		os.Symlink(target, p)
	})
	refuse("loose mode", "has mode", func(p string) {
		os.WriteFile(p, good, 0o600)
		os.Chmod(p, 0o644)
	})
	refuse("short", "not 32 bytes", func(p string) { os.WriteFile(p, good[:31], 0o600) })
	refuse("long", "not 32 bytes", func(p string) { os.WriteFile(p, append(good, 0), 0o600) })
	refuse("directory", "not a regular file", func(p string) { os.Mkdir(p, 0o700) })
	refuse("hard link", "hard links", func(p string) {
		other := filepath.Join(filepath.Dir(p), "other")
		os.WriteFile(other, good, 0o600)
		os.Link(other, p)
	})
	if os.Geteuid() == 0 {
		refuse("other owner", "belongs to uid", func(p string) {
			os.WriteFile(p, good, 0o600)
			os.Chown(p, 4242, 4242)
		})
	} else {
		t.Log("not root: the other-owner case is not exercised")
	}
}
