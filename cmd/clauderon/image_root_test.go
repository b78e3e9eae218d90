package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// requireImageBuilder skips unless root and a Docker daemon are available;
// with CLAUDERON_REQUIRE_ROOT_TESTS=1 it fails instead (as nftest.RequireRoot).
// -short skips the real build unless it is required.
func requireImageBuilder(t *testing.T) {
	t.Helper()
	required := os.Getenv("CLAUDERON_REQUIRE_ROOT_TESTS") == "1"
	skip := func(why string) {
		t.Helper()
		if required {
			t.Fatalf("%s (CLAUDERON_REQUIRE_ROOT_TESTS=1 forbids skipping)", why)
		}
		t.Skip(why + " (set CLAUDERON_REQUIRE_ROOT_TESTS=1 to make this a failure)")
	}
	if os.Geteuid() != 0 {
		skip("building the agent image needs root")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		skip("building the agent image needs a Docker daemon: " + strings.TrimSpace(string(out)))
	}
	if testing.Short() && !required {
		t.Skip("-short: the real image build takes seconds (minutes cold)")
	}
}

func imageTestSuffix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// realRun runs the CLI with the real tools.
func imageRealRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ex := func([]string, []string) error { t.Fatal("unexpected exec"); return nil }
	code = run(context.Background(), args, strings.NewReader(""), &out, &errOut, os.Environ(), ex)
	return code, out.String(), errOut.String()
}

func imageTestDocker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// removeImage removes an image this test created, by name.
func removeTestImage(t *testing.T, ref string) {
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", ref).Run() })
}

// TestImageBuild_Root builds the real agent image (debootstrap bookworm,
// Claude Code and Codex from npm; the caches are the production default, so
// only the first run on a host is slow), checks it as its default user with
// no network, rebuilds it as a no-op, lists it, then layers the agents onto
// an image of its own that lacks a uid 1000 user (--from).
func TestImageBuild_Root(t *testing.T) {
	requireImageBuilder(t)
	suffix := imageTestSuffix(t)
	tag := "clauderon-agent-test:" + suffix
	removeTestImage(t, tag)

	start := time.Now()
	code, out, errOut := imageRealRun(t, "image", "build", "--tag", tag)
	if code != 0 {
		t.Fatalf("image build = %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	t.Logf("built %s in %v:\n%s", tag, time.Since(start).Round(time.Millisecond), errOut)
	if want := "built " + tag + " (claude-code " + defaultClaudeVersion + ", codex " + defaultCodexVersion + ")"; !strings.HasPrefix(out, want) {
		t.Errorf("stdout %q, want prefix %q", out, want)
	}
	for _, step := range []string{"rootfs", "Claude Code " + defaultClaudeVersion, "Codex " + defaultCodexVersion, "docker import " + tag} {
		if !strings.Contains(errOut, step) || !strings.Contains(errOut, ": done in ") {
			t.Errorf("progress lacks step %q with its time:\n%s", step, errOut)
		}
	}

	got := imageTestDocker(t, "run", "--rm", "--network", "none", tag, "sh", "-c",
		`id; claude --version; codex --version; git --version; echo "home=$HOME pwd=$(pwd) autoupdater=$DISABLE_AUTOUPDATER path=$PATH"; `+
			`stat -c '%n %u:%g %a' "$HOME" /workspace /etc/clauderon; echo "etc-clauderon-entries=$(ls -A /etc/clauderon | wc -l)"; for c in curl less ps; do command -v $c; done`)
	for _, want := range []string{
		"uid=1000(agent) gid=1000(agent)",
		defaultClaudeVersion + " (Claude Code)",
		"codex-cli " + defaultCodexVersion,
		"git version 2.",
		"home=/home/agent pwd=/workspace autoupdater=1 path=",
		"/home/agent 1000:1000 755",
		"/workspace 1000:1000 755",
		"/etc/clauderon 0:0 755",
		"etc-clauderon-entries=0",
		"/usr/bin/curl", "/usr/bin/less", "/usr/bin/ps",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("container output lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(got, "/usr/local/bin:") {
		t.Errorf("PATH lacks /usr/local/bin:\n%s", got)
	}

	// Same inputs: a no-op, well under a second.
	start = time.Now()
	code, out, errOut = imageRealRun(t, "image", "build", "--tag", tag)
	took := time.Since(start)
	if code != 0 || out != tag+" is up to date (claude-code "+defaultClaudeVersion+", codex "+defaultCodexVersion+")\n" {
		t.Errorf("second build = %d %q %q", code, out, errOut)
	}
	if took > 2*time.Second {
		t.Errorf("up-to-date check took %v", took)
	}

	code, out, _ = imageRealRun(t, "--json", "image", "ls")
	var imgs []agentImage
	if err := json.Unmarshal([]byte(out), &imgs); err != nil || code != 0 {
		t.Fatalf("image ls --json = %d %v\n%s", code, err, out)
	}
	found := false
	for _, im := range imgs {
		if im.Tag == tag {
			found = im.ClaudeCode == defaultClaudeVersion && im.Codex == defaultCodexVersion && im.Size > 0 && !im.Created.IsZero()
		}
	}
	if !found {
		t.Errorf("image ls --json lacks %s with its versions:\n%s", tag, out)
	}

	t.Run("from", func(t *testing.T) {
		// A local image with no uid 1000 user and an ENV of its own (docker
		// commit: no registry).
		base := "clauderon-agent-test-base:" + suffix
		ctr := "clauderon-agent-test-base-" + suffix
		removeTestImage(t, base)
		t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", ctr).Run() })
		imageTestDocker(t, "run", "--name", ctr, "--network", "none", "--user", "0", tag, "sh", "-c",
			`sed -i '/^agent:/d' /etc/passwd /etc/group /etc/shadow /etc/gshadow && rm -rf /home/agent /usr/local/bin/claude`)
		imageTestDocker(t, "commit", "--change", `ENV FOO="bar baz"`, "--change", "USER root", ctr, base)
		fromTag := "clauderon-agent-test-from:" + suffix
		removeTestImage(t, fromTag)
		code, out, errOut := imageRealRun(t, "image", "build", "--from", base, "--tag", fromTag)
		if code != 0 || !strings.HasPrefix(out, "built "+fromTag) {
			t.Fatalf("build --from = %d %q\n%s", code, out, errOut)
		}
		got := imageTestDocker(t, "run", "--rm", "--network", "none", fromTag, "sh", "-c", `id; echo "foo=$FOO home=$HOME"; claude --version; codex --version`)
		for _, want := range []string{"uid=1000(agent) gid=1000(agent)", "foo=bar baz home=/home/agent", defaultClaudeVersion + " (Claude Code)", "codex-cli " + defaultCodexVersion} {
			if !strings.Contains(got, want) {
				t.Errorf("--from image output lacks %q:\n%s", want, got)
			}
		}
	})
}
