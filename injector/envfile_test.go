package injector

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

const fileToken = "sk-ant-oat01-FROMFILE-aaaaaaaaaaaaaaaaaaaa"

func writeCredFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCredentialsFile_ReadAfterEnvBeforeSecrets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "credentials.env")
	writeCredFile(t, file, "# operator's credentials\n\nexport CLAUDE_CODE_OAUTH_TOKEN="+fileToken+"\nGITHUB_TOKEN='ghp_FILEFILEFILEFILEFILEFILE'\nOPENAI_API_KEY=\"sk-file-openai-xxxxxxxxxxxx\"\n")
	env := []string{"GITHUB_TOKEN=ghp_ENVENVENVENVENVENVENV"}
	s, err := NewStore(StoreOptions{CredentialsFile: file, Environ: func() []string { return env }})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, want, source string }{
		{"anthropic", fileToken, "file " + file + " CLAUDE_CODE_OAUTH_TOKEN"},
		{"github", "ghp_ENVENVENVENVENVENVENV", "env GITHUB_TOKEN"},
		{"openai", "sk-file-openai-xxxxxxxxxxxx", "file " + file + " OPENAI_API_KEY"},
	} {
		sec, ok := s.Lookup("", tc.name)
		if !ok || sec.value() != tc.want {
			t.Errorf("%s: got %v %q, want %q", tc.name, ok, sec.value(), tc.want)
		}
		e, _ := s.lookupEntry("", tc.name)
		if e == nil || e.source != tc.source {
			t.Errorf("%s: source %+v, want %q", tc.name, e, tc.source)
		}
	}
}

// TestCredentialsFile_EditIsPickedUpWithoutRestart: the operator's
// `sudoedit credentials.env` (a new file renamed over the old one) takes
// effect on the next poll, and on Reload (SIGHUP).
func TestCredentialsFile_EditIsPickedUpWithoutRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "credentials.env")
		writeCredFile(t, file, "CLAUDE_CODE_OAUTH_TOKEN="+fileToken+"\n")
		s, err := NewStore(StoreOptions{CredentialsFile: file, Environ: func() []string { return nil }, PollInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Watch(ctx) }()
		defer func() { cancel(); <-done }()

		const second = "sk-ant-oat01-SECOND-bbbbbbbbbbbbbbbbbbbbbbb"
		tmp := file + ".tmp"
		writeCredFile(t, tmp, "CLAUDE_CODE_OAUTH_TOKEN="+second+"\n")
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // the next poll
		synctest.Wait()
		if sec, _ := s.Lookup("", "anthropic"); sec.value() != second {
			t.Error("one poll after the rename the credential is not the file's new value")
		}

		const third = "sk-ant-oat01-THIRD-ccccccccccccccccccccccc"
		writeCredFile(t, file, "CLAUDE_CODE_OAUTH_TOKEN="+third+"\n")
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
		if sec, _ := s.Lookup("", "anthropic"); sec.value() != third {
			t.Errorf("after Reload the credential is not the file's new value")
		}
	})
}

func TestCredentialsFile_RefusedWhenUnsafe(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.env")
	writeCredFile(t, good, "CLAUDE_CODE_OAUTH_TOKEN="+fileToken+"\n")
	loose := filepath.Join(dir, "loose.env")
	writeCredFile(t, loose, "CLAUDE_CODE_OAUTH_TOKEN="+fileToken+"\n")
	os.Chmod(loose, 0o640)
	link := filepath.Join(dir, "link.env")
	os.Symlink(good, link)
	fifo := filepath.Join(dir, "dir.env")
	os.Mkdir(fifo, 0o700)
	bad := filepath.Join(dir, "bad.env")
	writeCredFile(t, bad, "CLAUDE_CODE_OAUTH_TOKEN="+fileToken+"\nthis line has no equals "+fileToken+"\n")
	quote := filepath.Join(dir, "quote.env")
	writeCredFile(t, quote, "CLAUDE_CODE_OAUTH_TOKEN=\""+fileToken+"\n")
	for path, want := range map[string]string{
		loose: "chmod 600 " + loose,
		link:  "symbolic link",
		fifo:  "not a regular file",
		bad:   "line 2",
		quote: "unterminated quote",
	} {
		_, err := NewStore(StoreOptions{CredentialsFile: path, Environ: func() []string { return nil }})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want one containing %q", filepath.Base(path), err, want)
		}
		if err != nil && strings.Contains(err.Error(), fileToken) {
			t.Errorf("%s: the error shows the credential: %v", filepath.Base(path), err)
		}
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other.env")
		writeCredFile(t, other, "CLAUDE_CODE_OAUTH_TOKEN="+fileToken+"\n")
		os.Chown(other, 65534, 65534)
		if _, err := NewStore(StoreOptions{CredentialsFile: other, Environ: func() []string { return nil }}); err == nil || !strings.Contains(err.Error(), "chown") {
			t.Errorf("a file owned by another user: err = %v, want a refusal with the chown fix", err)
		}
	}
	if _, err := NewStore(StoreOptions{CredentialsFile: filepath.Join(dir, "absent.env"), Environ: func() []string { return nil }}); err != nil {
		t.Errorf("a missing credentials file: %v, want none (no credentials from it)", err)
	}
}

// TestCredentialsFile_ShadowedByEnvironmentIsLogged: a value in the file
// that the environment overrides would make an edit look ignored; say so.
func TestCredentialsFile_ShadowedByEnvironmentIsLogged(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "credentials.env")
	writeCredFile(t, file, "CLAUDE_CODE_OAUTH_TOKEN="+fileToken+"\n")
	var logs syncBuffer
	_, err := NewStore(StoreOptions{CredentialsFile: file, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Environ: func() []string { return []string{"CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-ENV-dddddddddddddddddddd"} }})
	if err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "shadowed") || !strings.Contains(out, "CLAUDE_CODE_OAUTH_TOKEN") {
		t.Errorf("no warning about the shadowed variable:\n%s", out)
	}
	if strings.Contains(out, fileToken) || strings.Contains(out, "ENV-ddd") {
		t.Errorf("the log shows a credential:\n%s", out)
	}
}
