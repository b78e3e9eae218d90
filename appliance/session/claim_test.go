package session

import "testing"

// TestClaimRun_OneCreatePerToken: Docker's authorization plugin admits one
// container create per run token (see authz.Policy.ClaimRun); a release
// (dockerd did not create it) gives the token back, and binding the
// container forgets it.
func TestClaimRun_OneCreatePerToken(t *testing.T) {
	m := &Manager{prov: newProvenance()}
	tok, err := m.expectRun(Provenance{Owner: "alice", Profile: "team-a", Placeholder: "0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	if m.ClaimRun("unknown") {
		t.Error("an unknown token was claimed")
	}
	if !m.ClaimRun(tok) {
		t.Fatal("the first claim failed")
	}
	if m.ClaimRun(tok) {
		t.Error("a claimed token was claimed again")
	}
	m.ReleaseRun(tok)
	if !m.ClaimRun(tok) {
		t.Error("a released token could not be claimed")
	}
	if !m.ExpectsRun(tok) {
		t.Error("a claimed token no longer vouches for its own container's labels")
	}
}
