package clauderond_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSharedBenchAdapterBuilds builds ../shared/bench's clauderond adapter
// against this tree, as `bash ../shared/bench/run.sh` does. The adapter is
// code outside this module that writes tlsmitm.Config{Router: …},
// injector.New(rules, store, nil) and injector.StoreOptions{}: renaming
// those would drop clauderond from the side-by-side benchmark without a
// word. Skipped where ../shared is absent.
func TestSharedBenchAdapterBuilds(t *testing.T) {
	adapter, err := filepath.Abs("../shared/bench/proxies/clauderond-adapter")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(adapter, "main.go")); err != nil {
		t.Skipf("no benchmark adapter beside the project: %v", err)
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	ws := t.TempDir()
	initWork := exec.Command("go", "work", "init", root, adapter)
	initWork.Dir = ws
	if out, err := initWork.CombinedOutput(); err != nil {
		t.Fatalf("go work init: %v\n%s", err, out)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(ws, "adapter"), "clauderond-bench-adapter")
	build.Dir = ws
	build.Env = append(os.Environ(), "GOWORK="+filepath.Join(ws, "go.work"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the benchmark's clauderond adapter no longer builds against this tree: %v\n%s", err, out)
	}
}
