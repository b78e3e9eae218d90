package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// Pinned agent versions of the default image (npm @anthropic-ai/claude-code
// and @openai/codex).
const (
	defaultClaudeVersion = "2.1.332"
	defaultCodexVersion  = "0.171.0"
	defaultAgentImage    = "clauderon-agent:latest"
	defaultImageCache    = "/var/cache/clauderon/agent-image"
)

// agentImageScript builds the image; it runs as `bash -c SCRIPT
// clauderon-image-build ARGS…` so the installed binary needs no checkout.
//
//go:embed agentimage.sh
var agentImageScript string

// toolFunc runs an external program with the given stdio and waits for it.
// The image commands use it (tests record instead of running).
type toolFunc func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, name string, args ...string) error

var (
	runTool toolFunc = runExternal
	geteuid          = os.Geteuid
)

func runExternal(_ context.Context, stdin io.Reader, stdout, stderr io.Writer, name string, args ...string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("%s is needed for this command: %w", name, err)
	}
	// No CommandContext: Ctrl-C reaches the whole foreground process group,
	// and the script cleans up after itself on SIGINT.
	cmd := exec.Command(path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}

// versionRE keeps npm specs to plain versions (no tags, ranges or URLs).
var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$`)

func (a *app) imageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build and list the agent images (Claude Code and Codex, no registry needed)",
		// The image commands use the docker CLI, not the daemon.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
	}
	cmd.AddCommand(a.imageBuildCmd(), a.imageLsCmd())
	return cmd
}

// imageBuild is the result line set printed by agentimage.sh on stdout.
type imageBuild struct {
	Status     string  `json:"status"` // built | up-to-date
	Tag        string  `json:"tag"`
	ID         string  `json:"id"`
	Hash       string  `json:"hash"`
	ClaudeCode string  `json:"claude_code"`
	Codex      string  `json:"codex"`
	Base       string  `json:"base"`
	Seconds    float64 `json:"seconds"`
}

func (a *app) imageBuildCmd() *cobra.Command {
	var tag, from, claudeV, codexV, cache, mirror string
	cmd := &cobra.Command{
		Use:   "build [--tag T] [--from IMAGE]",
		Short: "Build the agent image: Debian (debootstrap) or --from IMAGE, plus Claude Code and Codex",
		Long: `build makes the agent image that 'clauderon create' runs (default ` + defaultAgentImage + `)
with no registry but the Debian package archive and the npm registry:
a debootstrap bookworm rootfs (or the filesystem of a local image, --from),
the native Claude Code binary at /usr/local/bin/claude, the Codex CLI, a user
uid 1000 (agent, HOME /home/agent), /workspace and /etc/clauderon.

Slow inputs are cached under --cache-dir; an image whose inputs did not change
is left alone ("up to date"). Needs root (debootstrap, file ownership).`,
		Example: `  sudo clauderon image build
  sudo clauderon image build --from my-toolchain:latest --tag clauderon-agent:toolchain`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			for flag, v := range map[string]string{"--claude-version": claudeV, "--codex-version": codexV} {
				if !versionRE.MatchString(v) {
					return usageError{fmt.Errorf("%s %q is not a version like 1.2.3", flag, v)}
				}
			}
			if tag == "" || strings.ContainsAny(tag, " \t\n") || strings.HasPrefix(tag, "-") {
				return usageError{fmt.Errorf("--tag %q is not an image name", tag)}
			}
			if strings.HasPrefix(from, "-") {
				return usageError{fmt.Errorf("--from %q is not an image name", from)}
			}
			if geteuid() != 0 {
				return fmt.Errorf("clauderon image build needs root (debootstrap, file ownership in the image, the docker socket): run: sudo clauderon image build%s", shellArgs(cmd))
			}
			argv := []string{"-c", agentImageScript, "clauderon-image-build",
				"--tag", tag, "--claude-version", claudeV, "--codex-version", codexV, "--cache-dir", cache}
			if from != "" {
				argv = append(argv, "--from", from)
			}
			if mirror != "" {
				argv = append(argv, "--mirror", mirror)
			}
			var out bytes.Buffer
			runErr := runTool(cmd.Context(), nil, &out, a.errOut, "bash", argv...)
			res, scriptErr := parseBuildOutput(out.Bytes())
			switch {
			case scriptErr != "":
				return errors.New("image build failed: " + scriptErr)
			case runErr != nil:
				return fmt.Errorf("image build failed: %w", runErr)
			case res.Tag == "":
				return fmt.Errorf("image build printed no result")
			}
			if a.json {
				return a.printJSON(res)
			}
			if res.Status == "up-to-date" {
				fmt.Fprintf(a.out, "%s is up to date (claude-code %s, codex %s)\n", res.Tag, res.ClaudeCode, res.Codex)
			} else {
				fmt.Fprintf(a.out, "built %s (claude-code %s, codex %s) in %.0fs\n", res.Tag, res.ClaudeCode, res.Codex, res.Seconds)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&tag, "tag", "t", defaultAgentImage, "name of the image to build")
	f.StringVar(&from, "from", "", "layer the agents onto this local image instead of a Debian rootfs (no registry pull)")
	f.StringVar(&claudeV, "claude-version", defaultClaudeVersion, "Claude Code version (npm @anthropic-ai/claude-code)")
	f.StringVar(&codexV, "codex-version", defaultCodexVersion, "Codex CLI version (npm @openai/codex)")
	f.StringVar(&cache, "cache-dir", defaultImageCache, "cache of the debootstrap rootfs and npm installs")
	f.StringVar(&mirror, "mirror", "", "Debian mirror for debootstrap (default: the host's apt mirror)")
	return cmd
}

// shellArgs repeats the flags the user set, for the sudo hint.
func shellArgs(cmd *cobra.Command) string {
	var b strings.Builder
	for _, name := range []string{"tag", "from", "claude-version", "codex-version", "cache-dir", "mirror"} {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			fmt.Fprintf(&b, " --%s %s", name, shellQuote(f.Value.String()))
		}
	}
	return b.String()
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@+=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseBuildOutput reads agentimage.sh's KEY=VALUE lines.
func parseBuildOutput(out []byte) (imageBuild, string) {
	var r imageBuild
	var errMsg string
	text := map[string]*string{"error": &errMsg, "status": &r.Status, "tag": &r.Tag, "id": &r.ID,
		"hash": &r.Hash, "claude_code": &r.ClaudeCode, "codex": &r.Codex, "base": &r.Base}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		switch {
		case !ok:
		case k == "seconds":
			r.Seconds, _ = strconv.ParseFloat(v, 64)
		case text[k] != nil:
			*text[k] = v
		}
	}
	return r, errMsg
}

// agentImage is one row of `clauderon image ls`.
type agentImage struct {
	Tag        string    `json:"tag"`
	ID         string    `json:"id"`
	ClaudeCode string    `json:"claude_code"`
	Codex      string    `json:"codex"`
	Base       string    `json:"base,omitempty"`
	Hash       string    `json:"hash,omitempty"`
	Created    time.Time `json:"created"`
	Size       int64     `json:"size"`
}

func (a *app) imageLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the agent images (label clauderon.agent=1) with their agent versions",
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			imgs, err := a.agentImages(cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(imgs)
			}
			if len(imgs) == 0 {
				fmt.Fprintln(a.out, "no agent images; build one with: sudo clauderon image build")
				return nil
			}
			tw := tabwriter.NewWriter(a.out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TAG\tCLAUDE CODE\tCODEX\tCREATED\tSIZE")
			for _, im := range imgs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.Tag, orDash(im.ClaudeCode), orDash(im.Codex),
					im.Created.Local().Format("2006-01-02 15:04"), humanBytes(im.Size))
			}
			return tw.Flush()
		},
	}
}

// agentImages lists local images labelled clauderon.agent=1, one row per tag.
func (a *app) agentImages(ctx context.Context) ([]agentImage, error) {
	ids, err := dockerOutput(ctx, "image", "ls", "--quiet", "--no-trunc", "--filter", "label=clauderon.agent=1")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var uniq []string
	for _, id := range strings.Fields(string(ids)) {
		if !seen[id] {
			seen[id] = true
			uniq = append(uniq, id)
		}
	}
	imgs := []agentImage{}
	if len(uniq) == 0 {
		return imgs, nil
	}
	js, err := dockerOutput(ctx, append([]string{"image", "inspect"}, uniq...)...)
	if err != nil {
		return nil, err
	}
	var raw []struct {
		ID       string `json:"Id"`
		RepoTags []string
		Created  time.Time
		Size     int64
		Config   struct{ Labels map[string]string }
	}
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, fmt.Errorf("docker image inspect: %w", err)
	}
	for _, r := range raw {
		l := r.Config.Labels
		row := agentImage{ID: r.ID, ClaudeCode: l["clauderon.agent.claude-code"], Codex: l["clauderon.agent.codex"],
			Base: l["clauderon.agent.base"], Hash: l["clauderon.agent.hash"], Created: r.Created, Size: r.Size}
		tags := r.RepoTags
		if len(tags) == 0 {
			tags = []string{"<none>"}
		}
		for _, t := range tags {
			row.Tag = t
			imgs = append(imgs, row)
		}
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Tag < imgs[j].Tag })
	return imgs, nil
}

// dockerOutput runs the docker CLI with args and returns its stdout; a
// failure names the command (its first two words, e.g. "image ls") and
// what docker printed on stderr.
func dockerOutput(ctx context.Context, args ...string) ([]byte, error) {
	var out, errb bytes.Buffer
	if err := runTool(ctx, nil, &out, &errb, "docker", args...); err != nil {
		return nil, fmt.Errorf("docker %s: %w: %s", strings.Join(args[:min(2, len(args))], " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.0f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
