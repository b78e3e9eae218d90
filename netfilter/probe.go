package netfilter

import (
	"context"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Capabilities is what Probe found the kernel supports.
type Capabilities struct {
	// NFTables: nf_tables answers over netlink.
	NFTables bool
	// InetNAT: an inet table with a nat prerouting chain, redirect, reject,
	// conntrack state and NFLOG (nf_tables inet, nft_redir, nft_reject_inet,
	// nft_ct, nfnetlink_log).
	InetNAT bool
	// Bridge: a bridge-family table with a concatenated ifname . ipv4_addr
	// set lookup (nf_tables_bridge).
	Bridge bool
	// BridgeMeta: meta ibrname/obrname (nft_meta_bridge). Informational:
	// the ruleset does not need it (it keys on port names instead).
	BridgeMeta bool
	// Problems explains each missing capability, with the module to load.
	Problems []string
}

// Err returns nil when everything the ruleset needs is there, else an
// error naming the missing kernel support and the modprobe that fixes it.
func (c Capabilities) Err() error {
	if c.NFTables && c.InetNAT && c.Bridge {
		return nil
	}
	return fmt.Errorf("kernel lacks nftables support clauderond needs: %v", c.Problems)
}

// Probe checks, without leaving anything behind, that the kernel supports
// what Build emits: each check adds a throwaway table and deletes it in the
// same batch, so the kernel validates every expression but commits nothing.
func Probe(ctx context.Context, opts ...Option) Capabilities {
	o := newOptions(opts)
	var caps Capabilities
	c, err := o.conn()
	if err == nil {
		_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
	}
	if err != nil {
		caps.Problems = append(caps.Problems, fmt.Sprintf("nf_tables unavailable (%v): run `modprobe nf_tables`", err))
		return caps
	}
	caps.NFTables = true
	name := fmt.Sprintf("clauderon_probe_%d", os.Getpid())
	check := func(what, fix string, fam nftables.TableFamily, queue func(*nftables.Conn, *nftables.Table)) bool {
		if ctx.Err() != nil {
			caps.Problems = append(caps.Problems, fmt.Sprintf("%s: not probed: %v", what, ctx.Err()))
			return false
		}
		err := probeBatch(o, fam, name, queue)
		if err != nil {
			caps.Problems = append(caps.Problems, fmt.Sprintf("%s unsupported (%v): %s", what, err, fix))
		}
		return err == nil
	}
	caps.InetNAT = check("inet nat/redirect/reject/ct/log", "run `modprobe nf_tables nft_redir nft_reject_inet nft_ct nfnetlink_log nft_log`", nftables.TableFamilyINet, queueInetProbe)
	caps.Bridge = check("bridge family with concatenated sets", "run `modprobe nf_tables_bridge` (CONFIG_NF_TABLES_BRIDGE)", nftables.TableFamilyBridge, queueBridgeProbe)
	caps.BridgeMeta = probeBatch(o, nftables.TableFamilyBridge, name, queueBridgeMetaProbe) == nil
	return caps
}

func probeBatch(o options, fam nftables.TableFamily, name string, queue func(*nftables.Conn, *nftables.Table)) error {
	c, err := o.conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: fam, Name: name}
	c.AddTable(t)
	queue(c, t)
	c.DelTable(t)
	return c.Flush()
}

func queueInetProbe(c *nftables.Conn, t *nftables.Table) {
	nat := c.AddChain(nfChain(t, Chain{Name: "probe_nat", Type: "nat", Hook: "prerouting", Priority: prioNAT}))
	c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: Rule{Matches: []Match{NFProto{}, DPort{Proto: "tcp", Ports: []uint16{443}}}, Verdict: Redirect{Port: 1}}.compile(&exprCtx{})})
	in := c.AddChain(nfChain(t, Chain{Name: "probe_in", Type: "filter", Hook: "input", Priority: prioFilter}))
	for _, r := range []Rule{
		{Matches: []Match{CtEstablished{}}, Counter: true, Log: &Log{Prefix: "probe", Group: 1}, Verdict: Accept{}},
		{Matches: []Match{L4Proto{Proto: "tcp"}}, Verdict: RejectTCPReset{}},
		{Verdict: RejectAdminProhibited{}},
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: r.compile(&exprCtx{})})
	}
}

func queueBridgeProbe(c *nftables.Conn, t *nftables.Table) {
	s := nfSet(t, "probe_addrs", SetIfNameAddrs)
	if err := c.AddSet(s, nil); err != nil {
		return // surfaces as a Flush error below: the rule names a missing set
	}
	ch := c.AddChain(nfChain(t, Chain{Name: "probe_pre", Type: "filter", Hook: "prerouting", Priority: prioBridge}))
	x := &exprCtx{table: t, sets: map[string]*nftables.Set{s.Name: s}}
	r := Rule{Matches: []Match{EtherType{Types: []uint16{EtherIPv4}}, PortAddrNotIn{Set: s.Name}}, Counter: true, Verdict: Drop{}}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.compile(x)})
}

func queueBridgeMetaProbe(c *nftables.Conn, t *nftables.Table) {
	ch := c.AddChain(nfChain(t, Chain{Name: "probe_meta", Type: "filter", Hook: "forward", Priority: prioBridge}))
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyBRIIIFNAME, Register: 1},
		cmpEq(ifname("probe0")),
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
}
