package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCapabilitiesStep(t *testing.T) {
	dir := t.TempDir()
	status := func(eff string) string {
		p := filepath.Join(dir, eff)
		os.WriteFile(p, []byte("Name:\tclauderond\nCapInh:\t0000000000000000\nCapEff:\t"+eff+"\nCapBnd:\t0000000000000000\n"), 0o600)
		return p
	}
	// The unit's set: CHOWN DAC_OVERRIDE FOWNER NET_BIND_SERVICE NET_ADMIN NET_RAW.
	unit := status("000000000000340b")
	if s := capabilitiesStep(unit); !s.OK || !strings.Contains(s.Detail, "CAP_NET_ADMIN") || strings.Contains(s.Detail, "more than needed") {
		t.Errorf("the unit's set: %+v", s)
	}
	if s := capabilitiesStep(status("000001ffffffffff")); !s.OK || !strings.Contains(s.Detail, "more than needed") {
		t.Errorf("full root: %+v", s)
	}
	if s := capabilitiesStep(status("0000000000000400")); s.OK || !strings.Contains(s.Fix, "CAP_NET_ADMIN") {
		t.Errorf("no NET_ADMIN: %+v, want a failure naming it", s)
	}
	if s := capabilitiesStep(filepath.Join(dir, "absent")); s.OK {
		t.Errorf("unreadable status: %+v", s)
	}
}

func TestCredentialsFileStep(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.env")
	os.WriteFile(good, []byte("A=b\n"), 0o600)
	loose := filepath.Join(dir, "loose.env")
	os.WriteFile(loose, []byte("A=b\n"), 0o600)
	os.Chmod(loose, 0o644)
	link := filepath.Join(dir, "link.env")
	os.Symlink(good, link)
	for _, tc := range []struct {
		path, fix string
		ok        bool
	}{
		{"", "", true},
		{filepath.Join(dir, "absent.env"), "", true},
		{good, "", true},
		{loose, "chmod 600", false},
		{link, "replace the link", false},
		{dir, "regular", false},
	} {
		s := credentialsFileStep(tc.path)
		if s.OK != tc.ok || !strings.Contains(s.Fix+s.Detail, tc.fix) {
			t.Errorf("%q: %+v, want ok=%t and %q", tc.path, s, tc.ok, tc.fix)
		}
	}
}

func TestAuthzStep(t *testing.T) {
	if s := authzStep(3, "clauderon"); !s.OK {
		t.Errorf("asked: %+v", s)
	}
	if s := authzStep(0, "clauderon"); s.OK || !strings.Contains(s.Fix, `"authorization-plugins": ["clauderon"]`) {
		t.Errorf("never asked: %+v", s)
	}
}
