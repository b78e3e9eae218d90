package injector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
)

const testToken = "sk-ant-oat01-REAL-SECRET-VALUE-0123456789"

// TestSecrets_NeverInLogs prints a Secret every way the daemon might and
// fails if the value (or its hex/quoted forms) shows up anywhere.
func TestSecrets_NeverInLogs(t *testing.T) {
	s := NewSecret(testToken)
	type holder struct {
		Public  Secret
		private Secret
		Ptr     *Secret
	}
	h := holder{Public: s, private: s, Ptr: &s}
	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s", "%-20v", "% x"} {
		outputs["fmt "+verb] = fmt.Sprintf(verb, s)
		outputs["fmt struct "+verb] = fmt.Sprintf(verb, h)
		outputs["fmt ptr "+verb] = fmt.Sprintf(verb, &s)
		outputs["fmt slice "+verb] = fmt.Sprintf(verb, []Secret{s})
		outputs["fmt map "+verb] = fmt.Sprintf(verb, map[string]Secret{"k": s})
	}
	outputs["Sprint"] = fmt.Sprint(s, &s, h)
	outputs["Sprintln"] = fmt.Sprintln(s)
	outputs["String"] = s.String()
	outputs["GoString"] = s.GoString()
	outputs["error wrap"] = fmt.Errorf("using %v: %w", s, errors.New("boom")).Error()
	outputs["error wrap twice"] = fmt.Errorf("outer: %w", fmt.Errorf("inner %s", s)).Error()
	for name, v := range map[string]any{"value": s, "struct": h, "map val": map[string]Secret{"k": s}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%s): %v", name, err)
		}
		outputs["json "+name] = string(b)
	}
	var text, js bytes.Buffer
	for _, l := range []*slog.Logger{slog.New(slog.NewTextHandler(&text, nil)), slog.New(slog.NewJSONHandler(&js, nil))} {
		l.Info("msg", "secret", s, "ptr", &s, "holder", h, slog.Any("any", s), slog.Group("g", "s", s))
		l.With("w", s).Error("err", "err", fmt.Errorf("x %v", s))
	}
	outputs["slog text"] = text.String()
	outputs["slog json"] = js.String()
	outputs["panic"] = panicMessage(func() { panic(fmt.Sprint(s)) })
	outputs["panic value"] = panicMessage(func() { panic(s) })

	forbidden := []string{testToken, fmt.Sprintf("%x", testToken), fmt.Sprintf("%q", testToken), "REAL-SECRET"}
	for name, out := range outputs {
		for _, f := range forbidden {
			if strings.Contains(out, f) {
				t.Errorf("%s leaked the secret: %q", name, out)
			}
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s = %q, want it to say %s", name, out, Redacted)
		}
	}
	if got := s.Reveal(); got != testToken {
		t.Errorf("Reveal() = %q, want the value", got)
	}
}

func panicMessage(f func()) (msg string) {
	defer func() { msg = fmt.Sprint(recover()) }()
	f()
	return ""
}

func TestSecret_ZeroAndEqual(t *testing.T) {
	var zero Secret
	if !zero.IsZero() || !NewSecret("").IsZero() || zero.Reveal() != "" || zero.Fingerprint() != "" {
		t.Errorf("zero Secret: IsZero=%v Reveal=%q Fingerprint=%q", zero.IsZero(), zero.Reveal(), zero.Fingerprint())
	}
	a, b, c := NewSecret("one-token"), NewSecret("one-token"), NewSecret("another")
	if !a.Equal(b) || a.Equal(c) || a.Equal(zero) {
		t.Errorf("Equal: a==b %v, a==c %v, a==zero %v; want true false false", a.Equal(b), a.Equal(c), a.Equal(zero))
	}
	if fp := a.Fingerprint(); len(fp) != 8 || fp != b.Fingerprint() || fp == c.Fingerprint() {
		t.Errorf("Fingerprint %q (want 8 hex, equal for equal values, different otherwise)", fp)
	}
	if strings.Contains(a.Fingerprint(), "token") {
		t.Errorf("fingerprint contains the value")
	}
}

// TestSecrets_RevealCalledInExactlyOnePlace parses the package's
// production files and fails if Secret.Reveal gains a second caller: the
// raw value leaves a Secret only where Apply writes the header.
func TestSecrets_RevealCalledInExactlyOnePlace(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sites []string
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "Reveal" {
					sites = append(sites, fset.Position(sel.Pos()).String())
				}
				return true
			})
		}
	}
	if len(sites) != 1 || !strings.HasPrefix(sites[0], "injector.go:") {
		t.Fatalf("Secret.Reveal referenced at %v; want exactly one site, in injector.go (Apply)", sites)
	}
}
