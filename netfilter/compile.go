package netfilter

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// exprCtx carries what compiling needs: the table, the named sets, and a
// hook that adds an anonymous set to the batch (nil when only comparing).
type exprCtx struct {
	table *nftables.Table
	sets  map[string]*nftables.Set
	anon  func(s *nftables.Set, elems []nftables.SetElement) error
	err   error
}

// anonSet declares a constant anonymous set for one rule (one set per rule:
// anonymous sets cannot be shared) and returns the lookup for it.
func (x *exprCtx) anonSet(key nftables.SetDatatype, elems [][]byte, invert bool) *expr.Lookup {
	s := &nftables.Set{Table: x.table, Name: "__set%d", Anonymous: true, Constant: true, KeyType: key}
	if x.anon != nil {
		es := make([]nftables.SetElement, len(elems))
		for i, e := range elems {
			es[i] = nftables.SetElement{Key: e}
		}
		if err := x.anon(s, es); err != nil && x.err == nil {
			x.err = fmt.Errorf("adding anonymous set: %w", err)
		}
	}
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert}
}

func (x *exprCtx) namedSet(name string, invert bool) *expr.Lookup {
	l := &expr.Lookup{SourceRegister: 1, SetName: name, Invert: invert}
	if s, ok := x.sets[name]; ok {
		l.SetID = s.ID
	}
	return l
}

// ifname returns name zero-padded to IFNAMSIZ: without the padding the
// kernel compares a prefix ("veth1" would match "veth12").
func ifname(name string) []byte {
	b := make([]byte, ifNameSize)
	copy(b, name)
	return b
}

func be16(v uint16) []byte { return binaryutil.BigEndian.PutUint16(v) }

func cmpEq(data []byte) *expr.Cmp { return compare(data, false) }

// compare compares register 1 with data: equal, or with neg not equal.
func compare(data []byte, neg bool) *expr.Cmp {
	op := expr.CmpOpEq
	if neg {
		op = expr.CmpOpNeq
	}
	return &expr.Cmp{Op: op, Register: 1, Data: data}
}

// notEq is the nft text of compare's operator: "!= " with neg, else nothing.
func notEq(neg bool) string {
	if neg {
		return "!= "
	}
	return ""
}

// andXor sets register 1 (32 bits, host byte order) to
// (register 1 & mask) ^ xor.
func andXor(mask, xor uint32) *expr.Bitwise {
	return &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(xor)}
}

// compile turns r into the kernel expressions of one rule.
func (r Rule) compile(x *exprCtx) []expr.Any {
	var out []expr.Any
	for _, m := range r.Matches {
		out = append(out, m.exprs(x)...)
	}
	if r.Counter {
		out = append(out, &expr.Counter{})
	}
	if r.Log != nil {
		out = append(out, r.Log.exprs()...)
	}
	if r.Verdict != nil {
		out = append(out, r.Verdict.exprs(x)...)
	}
	return out
}
