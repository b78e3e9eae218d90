package tlsmitm

import (
	"crypto/x509"
	"net/netip"
	"reflect"
	"testing"
)

// TestConfig_ReloadableMatchesConfig: every field a reload may change is a
// Config field of the same name and type, and SetReloadable and reloadable
// carry each of them across (a field added to one side only fails here).
func TestConfig_ReloadableMatchesConfig(t *testing.T) {
	rt, ct := reflect.TypeFor[Reloadable](), reflect.TypeFor[Config]()
	for f := range rt.Fields() {
		cf, ok := ct.FieldByName(f.Name)
		if !ok || cf.Type != f.Type {
			t.Errorf("Reloadable.%s (%s) has no Config field of that name and type", f.Name, f.Type)
		}
	}
	router, _ := NewStaticRouter([]string{"a.example"}, nil)
	want := Reloadable{
		Router: router, Injector: fakeInjector{}, Identity: fakeIdentity{}, Auditor: newRecorder(),
		Upstreams: []Upstream{{Host: "a.example", Address: "127.0.0.1:1"}}, DeniedPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Resolver: staticResolver{}, RootCAs: x509.NewCertPool(),
	}
	for f, v := range reflect.ValueOf(want).Fields() {
		if v.IsZero() {
			t.Errorf("set Reloadable.%s in this test, so that it is carried across", f.Name)
		}
	}
	var c Config
	c.SetReloadable(want)
	if got := c.reloadable(); !reflect.DeepEqual(got, want) {
		t.Errorf("reloadable(SetReloadable(r)) = %+v, want %+v", got, want)
	}
}
