package appliance

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/clauderon/clauderond/injector"
)

// warnMissingCredentials says at start, with the fix, which built-in
// credentials of the default profile the daemon has none of: requests to
// those hosts go out without one. A missing Anthropic credential is a
// warning (it is what agents need); the others are information.
// underSudo: the daemon was started with sudo, which drops the caller's
// environment.
func warnMissingCredentials(log *slog.Logger, summary []injector.CredentialStatus, file string, underSudo bool) {
	var missing []string
	anthropic := false
	for _, c := range summary {
		if c.Profile != injector.DefaultProfile || c.Present {
			continue
		}
		missing = append(missing, c.Name)
		anthropic = anthropic || c.Name == "anthropic"
	}
	if len(missing) == 0 {
		return
	}
	if anthropic {
		log.Warn("no Anthropic credential: requests to api.anthropic.com will carry none and fail with 401",
			"fix", anthropicFix(file, underSudo))
	}
	log.Info("credentials not configured; requests to their hosts go out without one",
		"credentials", strings.Join(missing, ","), "env", envHint(missing))
}

func anthropicFix(file string, underSudo bool) string {
	var fixes []string
	if file != "" {
		fixes = append(fixes, fmt.Sprintf("put CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-… in %s (mode 0600) and reload (sudo systemctl reload clauderond, or kill -HUP); the daemon also re-reads it when it changes", file))
	}
	if underSudo {
		fixes = append(fixes, "sudo drops your environment: start with sudo --preserve-env=CLAUDE_CODE_OAUTH_TOKEN clauderond")
	} else {
		fixes = append(fixes, "or set CLAUDE_CODE_OAUTH_TOKEN (or ANTHROPIC_API_KEY) in the daemon's environment")
	}
	return strings.Join(fixes, "; ")
}

func envHint(names []string) string {
	var vars []string
	for _, n := range names {
		vars = append(vars, injector.EnvNames(n)[0])
	}
	return strings.Join(vars, ",")
}
