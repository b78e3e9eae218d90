package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// toolCall is one external program the image commands ran.
type toolCall struct {
	name string
	args []string
}

// fakeTools replaces runTool and geteuid for one test. reply answers each
// call (stdout, error).
func fakeTools(t *testing.T, euid int, reply func(c toolCall) (string, error)) *[]toolCall {
	t.Helper()
	var calls []toolCall
	oldRun, oldEuid := runTool, geteuid
	runTool = func(_ context.Context, _ io.Reader, stdout, _ io.Writer, name string, args ...string) error {
		c := toolCall{name, args}
		calls = append(calls, c)
		out, err := reply(c)
		_, _ = io.WriteString(stdout, out)
		return err
	}
	geteuid = func() int { return euid }
	t.Cleanup(func() { runTool, geteuid = oldRun, oldEuid })
	return &calls
}

// runImage runs the CLI without a daemon: the image commands must not need one
// (an explicit --config that does not exist would fail every daemon command).
func runImage(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ex := func([]string, []string) error { t.Fatal("image commands must not exec docker in place"); return nil }
	code = run(context.Background(), append([]string{"--config", "/nonexistent/clauderon.yaml"}, args...),
		strings.NewReader(""), &out, &errOut, []string{"HOME=/nonexistent"}, ex)
	return code, out.String(), errOut.String()
}

const builtOutput = "status=built\ntag=clauderon-agent:latest\nid=sha256:abc\nhash=0123456789abcdef\nclaude_code=2.1.332\ncodex=0.171.0\nbase=debian:bookworm-minbase\nseconds=183.4\n"

// scriptArgs returns the arguments after `bash -c SCRIPT NAME`.
func scriptArgs(t *testing.T, c toolCall) []string {
	t.Helper()
	if c.name != "bash" || len(c.args) < 3 || c.args[0] != "-c" || c.args[1] != agentImageScript || c.args[2] != "clauderon-image-build" {
		t.Fatalf("not the embedded build script: %s %.60q", c.name, c.args)
	}
	return c.args[3:]
}

func TestImageBuild_NonRootRefused(t *testing.T) {
	calls := fakeTools(t, 1000, func(toolCall) (string, error) { return "", nil })
	code, out, errOut := runImage(t, "image", "build")
	if code != exitFailure || out != "" {
		t.Fatalf("non-root build = %d, stdout %q", code, out)
	}
	if !strings.Contains(errOut, "run: sudo clauderon image build\n") {
		t.Errorf("stderr lacks the sudo hint: %q", errOut)
	}
	if len(*calls) != 0 {
		t.Errorf("ran %v as non-root", *calls)
	}
	// The hint repeats the flags that were set.
	_, _, errOut = runImage(t, "image", "build", "--tag", "a/b:1", "--from", "debian:12")
	if !strings.Contains(errOut, "run: sudo clauderon image build --tag a/b:1 --from debian:12\n") {
		t.Errorf("hint without the flags: %q", errOut)
	}
}

func TestImageBuild_DefaultsAndFlagsReachScript(t *testing.T) {
	calls := fakeTools(t, 0, func(toolCall) (string, error) { return builtOutput, nil })
	code, out, errOut := runImage(t, "image", "build")
	if code != 0 {
		t.Fatalf("build = %d, stderr %q", code, errOut)
	}
	if want := "built clauderon-agent:latest (claude-code 2.1.332, codex 0.171.0) in 183s\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	got := strings.Join(scriptArgs(t, (*calls)[0]), " ")
	if want := "--tag clauderon-agent:latest --claude-version 2.1.332 --codex-version 0.171.0 --cache-dir /var/cache/clauderon/agent-image"; got != want {
		t.Errorf("script args\n %q\nwant\n %q", got, want)
	}

	*calls = nil
	code, _, errOut = runImage(t, "image", "build", "-t", "x/agent:t1", "--from", "my-image:dev", "--claude-version", "2.1.300",
		"--codex-version", "0.170.0", "--cache-dir", "/tmp/c", "--mirror", "http://mirror.example/debian")
	if code != 0 {
		t.Fatalf("build with flags = %d %q", code, errOut)
	}
	got = strings.Join(scriptArgs(t, (*calls)[0]), " ")
	if want := "--tag x/agent:t1 --claude-version 2.1.300 --codex-version 0.170.0 --cache-dir /tmp/c --from my-image:dev --mirror http://mirror.example/debian"; got != want {
		t.Errorf("script args\n %q\nwant\n %q", got, want)
	}
}

func TestImageBuild_UpToDateAndJSON(t *testing.T) {
	fakeTools(t, 0, func(toolCall) (string, error) {
		return strings.Replace(builtOutput, "status=built", "status=up-to-date", 1), nil
	})
	code, out, _ := runImage(t, "image", "build")
	if code != 0 || out != "clauderon-agent:latest is up to date (claude-code 2.1.332, codex 0.171.0)\n" {
		t.Errorf("up to date = %d %q", code, out)
	}
	code, out, _ = runImage(t, "--json", "image", "build")
	var res imageBuild
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
		t.Fatalf("--json = %d %v %q", code, err, out)
	}
	want := imageBuild{Status: "up-to-date", Tag: "clauderon-agent:latest", ID: "sha256:abc", Hash: "0123456789abcdef",
		ClaudeCode: "2.1.332", Codex: "0.171.0", Base: "debian:bookworm-minbase", Seconds: 183.4}
	if res != want {
		t.Errorf("--json = %+v, want %+v", res, want)
	}
}

func TestImageBuild_ScriptFailureNamesTheLog(t *testing.T) {
	fakeTools(t, 0, func(toolCall) (string, error) {
		return "error=debootstrap from http://deb.debian.org/debian failed; see /var/cache/clauderon/agent-image/build.log\n",
			&exec.ExitError{}
	})
	code, out, errOut := runImage(t, "image", "build")
	if code != exitFailure || out != "" {
		t.Fatalf("failed build = %d %q", code, out)
	}
	if want := "clauderon: image build failed: debootstrap from http://deb.debian.org/debian failed; see /var/cache/clauderon/agent-image/build.log\n"; errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	code, out, _ = runImage(t, "--json", "image", "build")
	var e struct {
		Error    string `json:"error"`
		ExitCode int    `json:"exit_code"`
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil || code != 1 || !strings.Contains(e.Error, "build.log") {
		t.Errorf("--json failure = %d %v %q", code, err, out)
	}

	// Killed without a message: still a failure that says so.
	fakeTools(t, 0, func(toolCall) (string, error) { return "", errors.New("signal: killed") })
	code, _, errOut = runImage(t, "image", "build")
	if code != exitFailure || !strings.Contains(errOut, "image build failed: signal: killed") {
		t.Errorf("killed build = %d %q", code, errOut)
	}
}

func TestImageBuild_UsageErrors(t *testing.T) {
	calls := fakeTools(t, 0, func(toolCall) (string, error) { return builtOutput, nil })
	for _, argv := range [][]string{
		{"image", "build", "--claude-version", "latest"},
		{"image", "build", "--codex-version", "1.0.0 || curl evil"},
		{"image", "build", "--tag", ""},
		{"image", "build", "--tag", "-x"},
		{"image", "build", "--tag", "my agent:1"},
		{"image", "build", "--from", "--evil"},
		{"image", "build", "extra"},
		{"image", "build", "--bogus"},
	} {
		if code, _, errOut := runImage(t, argv...); code != exitUsage {
			t.Errorf("%q = %d (%q), want %d", argv, code, errOut, exitUsage)
		}
	}
	if len(*calls) != 0 {
		t.Errorf("ran the script on usage errors: %d calls", len(*calls))
	}
}

const inspectOutput = `[
 {"Id": "sha256:1111", "RepoTags": ["clauderon-agent:latest", "clauderon-agent:v1"], "Created": "2026-11-28T21:00:00Z", "Size": 1023000000,
  "Config": {"Labels": {"clauderon.agent": "1", "clauderon.agent.claude-code": "2.1.332", "clauderon.agent.codex": "0.171.0", "clauderon.agent.hash": "h1", "clauderon.agent.base": "debian:bookworm-minbase"}}},
 {"Id": "sha256:2222", "RepoTags": ["acme/agent:dev"], "Created": "2026-11-27T08:30:00Z", "Size": 2100000000,
  "Config": {"Labels": {"clauderon.agent": "1", "clauderon.agent.claude-code": "2.1.300", "clauderon.agent.codex": "0.170.0"}}}
]`

func TestImageLs_TableAndJSON(t *testing.T) {
	calls := fakeTools(t, 1000, func(c toolCall) (string, error) {
		switch strings.Join(c.args[:2], " ") {
		case "image ls":
			return "sha256:1111\nsha256:2222\nsha256:1111\n", nil
		case "image inspect":
			return inspectOutput, nil
		}
		return "", errors.New("unexpected")
	})
	t.Setenv("TZ", "UTC")
	code, out, errOut := runImage(t, "image", "ls")
	if code != 0 {
		t.Fatalf("image ls = %d %q", code, errOut)
	}
	if got := strings.Join((*calls)[0].args, " "); got != "image ls --quiet --no-trunc --filter label=clauderon.agent=1" {
		t.Errorf("docker %s", got)
	}
	if got := strings.Join((*calls)[1].args, " "); got != "image inspect sha256:1111 sha256:2222" {
		t.Errorf("docker %s (ids deduplicated?)", got)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "TAG") || !strings.Contains(lines[0], "CLAUDE CODE") {
		t.Fatalf("table:\n%s", out)
	}
	for i, want := range [][]string{
		{"acme/agent:dev", "2.1.300", "0.170.0", "2.10 GB"},
		{"clauderon-agent:latest", "2.1.332", "0.171.0", "1.02 GB"},
		{"clauderon-agent:v1", "2.1.332", "0.171.0"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("row %d %q lacks %q", i+1, lines[i+1], w)
			}
		}
	}

	code, out, _ = runImage(t, "image", "ls", "--json")
	var imgs []agentImage
	if err := json.Unmarshal([]byte(out), &imgs); err != nil || code != 0 || len(imgs) != 3 {
		t.Fatalf("--json = %d %v %q", code, err, out)
	}
	if im := imgs[1]; im.Tag != "clauderon-agent:latest" || im.ClaudeCode != "2.1.332" || im.Codex != "0.171.0" || im.Size != 1023000000 || im.Created.Year() != 2026 || im.Base != "debian:bookworm-minbase" {
		t.Errorf("row = %+v", im)
	}
}

func TestImageLs_EmptyAndDockerMissing(t *testing.T) {
	fakeTools(t, 1000, func(toolCall) (string, error) { return "", nil })
	code, out, _ := runImage(t, "image", "ls")
	if code != 0 || !strings.Contains(out, "sudo clauderon image build") {
		t.Errorf("empty ls = %d %q", code, out)
	}
	code, out, _ = runImage(t, "image", "ls", "--json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("empty ls --json = %d %q", code, out)
	}
	fakeTools(t, 1000, func(toolCall) (string, error) { return "", errors.New("docker is needed for this command") })
	code, _, errOut := runImage(t, "image", "ls")
	if code != exitFailure || !strings.Contains(errOut, "docker is needed") {
		t.Errorf("ls without docker = %d %q", code, errOut)
	}
}

// The embedded script parses, and its failure path prints error= on stdout.
func TestAgentImageScript_SyntaxAndPreflight(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	if out, err := exec.Command(bash, "-n", "-c", agentImageScript).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	cmd := exec.Command(bash, "-c", agentImageScript, "clauderon-image-build", "--no-such-flag")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("unknown argument accepted")
	}
	if _, msg := parseBuildOutput(stdout.Bytes()); msg != "unknown argument --no-such-flag" {
		t.Errorf("error line %q (stdout %q, stderr %q)", msg, stdout.String(), stderr.String())
	}
}
