package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/clauderon/clauderond/appliance/api"
)

// Linux capability numbers the daemon cares about.
const (
	capChown          = 0
	capDACOverride    = 1
	capFowner         = 3
	capNetBindService = 10
	capNetAdmin       = 12
	capNetRaw         = 13
	capSysPtrace      = 19
	capSysAdmin       = 21
)

var capNames = map[int]string{capChown: "CAP_CHOWN", capDACOverride: "CAP_DAC_OVERRIDE", capFowner: "CAP_FOWNER",
	capNetBindService: "CAP_NET_BIND_SERVICE", capNetAdmin: "CAP_NET_ADMIN", capNetRaw: "CAP_NET_RAW",
	capSysPtrace: "CAP_SYS_PTRACE", capSysAdmin: "CAP_SYS_ADMIN"}

// capabilitiesStep reads the daemon's effective capabilities (the doctor
// runs inside the daemon): CAP_NET_ADMIN is required; CAP_SYS_ADMIN and
// CAP_SYS_PTRACE are more than the installed unit grants and more than
// the daemon needs.
func capabilitiesStep(procStatus string) api.DoctorStep {
	s := api.DoctorStep{Name: "daemon capabilities"}
	eff, err := effectiveCaps(procStatus)
	if err != nil {
		s.Detail = err.Error()
		s.Fix = "run the daemon on Linux with /proc mounted"
		return s
	}
	has := func(c int) bool { return eff&(1<<c) != 0 }
	var held []string
	for _, c := range []int{capNetAdmin, capNetRaw, capNetBindService, capChown, capFowner, capDACOverride, capSysAdmin, capSysPtrace} {
		if has(c) {
			held = append(held, capNames[c])
		}
	}
	s.Detail = "effective: " + strings.Join(held, " ")
	switch {
	case !has(capNetAdmin):
		s.Fix = "the daemon lacks CAP_NET_ADMIN (nftables, the bridge): run it as root, or with the installed unit scripts/clauderond.service"
	case has(capSysAdmin) || has(capSysPtrace):
		s.OK = true
		s.Detail += " (more than needed: the installed unit runs it without CAP_SYS_ADMIN and CAP_SYS_PTRACE)"
	default:
		s.OK = true
	}
	return s
}

// effectiveCaps parses CapEff from a /proc/<pid>/status file.
func effectiveCaps(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("reading capabilities: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapEff in %s", path)
}

// credentialsFileStep checks the credentials file the daemon reads: it
// may be absent, but when present it must be the daemon's own regular
// file with no group or other access (the daemon refuses it otherwise and
// keeps the credentials it had).
func credentialsFileStep(path string) api.DoctorStep {
	s := api.DoctorStep{Name: "credentials file"}
	if path == "" {
		s.OK, s.Detail = true, "none configured (credentials_file: \"\")"
		return s
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.OK, s.Detail = true, path+" does not exist (credentials come from the environment and secrets/)"
		return s
	case err != nil:
		s.Detail, s.Fix = err.Error(), "make "+path+" readable by the daemon's user"
		return s
	case fi.Mode()&fs.ModeSymlink != 0:
		s.Detail, s.Fix = path+" is a symbolic link; the daemon refuses it", "replace the link with the file itself"
		return s
	case !fi.Mode().IsRegular():
		s.Detail, s.Fix = path+" is not a regular file", "replace it with a KEY=value file, mode 0600"
		return s
	case fi.Mode().Perm()&0o077 != 0:
		s.Detail, s.Fix = fmt.Sprintf("%s has mode %04o; the daemon refuses it", path, fi.Mode().Perm()), "sudo chmod 600 "+path
		return s
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		s.Detail = fmt.Sprintf("%s belongs to uid %d, not to the daemon's user (uid %d); the daemon refuses it", path, st.Uid, os.Geteuid())
		s.Fix = fmt.Sprintf("sudo chown %d %s", os.Geteuid(), path)
		return s
	}
	s.OK, s.Detail = true, path+": mode 0600, the daemon's own; re-read on change and on reload"
	return s
}
