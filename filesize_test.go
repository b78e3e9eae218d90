package clauderond_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// maxSourceLines is the longest a hand-written, non-test Go file may be: a
// file past it holds more than one role and is split by role (the HTTP/1.1
// relay into client side, exchange, upstream side and wire writers).
const maxSourceLines = 450

// generated is the marker go generate tools write (go.dev/s/generatedcode).
var generated = regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)

// TestHouse_SourceFilesStayShort fails when a non-test, non-generated Go
// file grows past maxSourceLines.
func TestHouse_SourceFilesStayShort(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "." && (strings.HasPrefix(name, ".") || name == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if generated.Match(src) {
			return nil
		}
		if n := bytes.Count(src, []byte("\n")); n > maxSourceLines {
			t.Errorf("%s has %d lines (at most %d outside tests and generated code): split it by role", path, n, maxSourceLines)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
