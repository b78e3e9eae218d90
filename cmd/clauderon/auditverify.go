package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/spf13/cobra"
)

// auditVerifyCmd is `clauderon audit verify`: the daemon checks the audit
// chain (the log and its key are root's) and the CLI reports the first
// line altered, removed, inserted or reordered. Exit 0 when intact, 1
// otherwise.
func (a *app) auditVerifyCmd() *cobra.Command {
	return verdictCmd(a, "verify", "Check the audit log's chain MACs; exits 1 at the first altered, missing, inserted or reordered line",
		(*api.Client).AuditVerify, func(res api.AuditVerification) bool { return res.OK },
		func(res api.AuditVerification) { writeAuditVerification(a.out, res) })
}

func writeAuditVerification(w io.Writer, res api.AuditVerification) {
	files := termSafe(strings.Join(res.Files, ", "))
	if res.OK {
		fmt.Fprintf(w, "audit intact: %d chained lines in %d files (%s)\n", res.Lines, len(res.Files), files)
		if res.Unchained > 0 {
			fmt.Fprintf(w, "  %d older lines were written before chaining and cannot be checked\n", res.Unchained)
		}
		return
	}
	fmt.Fprintln(w, "!!! AUDIT LOG TAMPERED OR INCOMPLETE")
	if b := res.FirstBad; b != nil {
		where := termSafe(b.File)
		if b.Line > 0 {
			where = fmt.Sprintf("%s line %d", where, b.Line)
		}
		fmt.Fprintf(w, "!!!   first problem: %s: %s\n", where, termSafe(b.Reason))
	}
	fmt.Fprintf(w, "  %d chained lines verified before it, files checked: %s\n", res.Lines, files)
}
