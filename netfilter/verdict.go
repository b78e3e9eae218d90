package netfilter

import (
	"fmt"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Verdict ends a Rule.
type Verdict interface {
	String() string
	exprs(x *exprCtx) []expr.Any
}

// Accept and Drop are the plain verdicts.
type (
	Accept struct{}
	Drop   struct{}
)

func (Accept) String() string { return "accept" }
func (Drop) String() string   { return "drop" }

func (Accept) exprs(*exprCtx) []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func (Drop) exprs(*exprCtx) []expr.Any   { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }

// RejectTCPReset answers TCP with a reset: immediate, not rate-limited.
type RejectTCPReset struct{}

func (RejectTCPReset) String() string { return "reject with tcp reset" }

func (RejectTCPReset) exprs(*exprCtx) []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
}

// RejectAdminProhibited answers with ICMP(v6) administratively prohibited.
type RejectAdminProhibited struct{}

func (RejectAdminProhibited) String() string { return "reject with icmpx admin-prohibited" }

func (RejectAdminProhibited) exprs(*exprCtx) []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}
}

// Redirect rewrites the destination to the incoming interface's primary
// address and Port (nat chains only).
type Redirect struct{ Port uint16 }

func (v Redirect) String() string { return fmt.Sprintf("redirect to :%d", v.Port) }

func (v Redirect) exprs(*exprCtx) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: be16(v.Port)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

// SetMarkBits is a non-terminal statement: it sets (or, with Clear,
// clears) Bits of the packet's meta mark and keeps every other bit, then
// the packet continues with the next rule.
type SetMarkBits struct {
	Bits  uint32
	Clear bool
}

func (v SetMarkBits) String() string {
	if v.Clear {
		return fmt.Sprintf("meta mark set meta mark & 0x%08x", ^v.Bits)
	}
	return fmt.Sprintf("meta mark set meta mark | 0x%08x", v.Bits)
}

func (v SetMarkBits) exprs(*exprCtx) []expr.Any {
	xor := v.Bits
	if v.Clear {
		xor = 0
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		andXor(^v.Bits, xor),
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// Masquerade source-NATs to the outgoing interface's address (nat
// postrouting chains only).
type Masquerade struct{}

func (Masquerade) String() string { return "masquerade" }

func (Masquerade) exprs(*exprCtx) []expr.Any { return []expr.Any{&expr.Masq{}} }

func (l *Log) exprs() []expr.Any {
	return []expr.Any{&expr.Log{
		Key:   1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_GROUP,
		Data:  []byte(l.Prefix),
		Group: l.Group,
	}}
}
