package injector_test

import (
	"fmt"
	"net/http/httptest"
	"os"

	"github.com/clauderon/clauderond/injector"
)

// The appliance builds one Store and one Injector; tlsmitm's adapter calls
// Apply for every intercepted request.
func Example() {
	store, err := injector.NewStore(injector.StoreOptions{
		SecretsDir: "", // state_dir/secrets in the daemon
		Environ:    func() []string { return []string{"GITHUB_TOKEN=ghp_example0123456789"} },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	inj, err := injector.New(injector.DefaultRules(), store, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	req := httptest.NewRequest("GET", "https://api.github.com/user", nil)
	req.Header.Set("Authorization", "token "+injector.PlaceholderGitHub)

	applied, err := inj.Apply(req, "api.github.com", "")
	fmt.Println(applied.Rule, applied.Injected, err)
	fmt.Println(req.Header.Get("Authorization") != "token clauderon-proxy")

	secret, _ := store.Lookup("", "github")
	fmt.Println(secret, len(secret.Fingerprint()))

	_, err = inj.Apply(httptest.NewRequest("GET", "https://evil.example/", nil), "evil.example", "")
	fmt.Println(err)
	// Output:
	// api.github.com true <nil>
	// true
	// [REDACTED] 8
	// no credential rule for host "evil.example"
}
