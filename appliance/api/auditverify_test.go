package api

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// verifyingBackend is a fake that can also verify the audit chain.
type verifyingBackend struct {
	*fakeBackend
	res AuditVerification
	err error
}

func (v verifyingBackend) AuditVerify(ctx context.Context) (AuditVerification, error) {
	return v.res, v.err
}

func TestClient_AuditVerifyRoundTrip(t *testing.T) {
	want := AuditVerification{OK: false, Files: []string{"audit.jsonl.1", "audit.jsonl"}, Lines: 41, Unchained: 2,
		FirstBad: &AuditBadLine{File: "audit.jsonl.1", Line: 7, Reason: "the line does not match its chain MAC"}}
	c := serve(t, verifyingBackend{fakeBackend: newFake(), res: want})
	got, err := c.AuditVerify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("AuditVerify (-want +got):\n%s", d)
	}
}

func TestClient_AuditVerifyErrorsAndUnsupportedBackends(t *testing.T) {
	c := serve(t, verifyingBackend{fakeBackend: newFake(), err: errors.New("the audit log is not chained (no key)")})
	if _, err := c.AuditVerify(context.Background()); err == nil || err.Error() != "the audit log is not chained (no key)" {
		t.Errorf("err = %v", err)
	}
	c = serve(t, newFake())
	_, err := c.AuditVerify(context.Background())
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotImplemented {
		t.Errorf("backend without AuditVerify: err = %v, want 501", err)
	}
}
