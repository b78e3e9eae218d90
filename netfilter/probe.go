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
	// conntrack state, NFLOG, socket mark lookup in input, an output chain
	// and masquerade in nat postrouting (nf_tables inet, nft_redir,
	// nft_reject_inet, nft_ct, nfnetlink_log, nft_socket, nft_masq).
	InetNAT bool
	// Bridge: a bridge-family table with a concatenated ifname . ipv4_addr
	// set lookup and meta mark set (nf_tables_bridge).
	Bridge bool
	// ARP: an arp-family table with an input chain matching the mark
	// (nf_tables arp family, CONFIG_NF_TABLES_ARP).
	ARP bool
	// BridgeMeta: meta ibrname/obrname (nft_meta_bridge). Informational:
	// the ruleset does not need it (it keys on port names instead).
	BridgeMeta bool
	// Problems explains each missing capability, with the module to load.
	Problems []string
}

// Err returns nil when everything the ruleset needs is there, else an
// error naming the missing kernel support and the modprobe that fixes it.
func (c Capabilities) Err() error {
	if c.NFTables && c.InetNAT && c.Bridge && c.ARP {
		return nil
	}
	return fmt.Errorf("kernel lacks nftables support clauderond needs: %v", c.Problems)
}

// Probe checks, without leaving anything behind, that the kernel supports
// what Build emits: each check adds a throwaway table and deletes it in the
// same batch, so the kernel validates every expression but commits nothing.
func Probe(ctx context.Context, cfg KernelConfig) Capabilities {
	o := newOptions(cfg)
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
	caps.InetNAT = check("inet nat/redirect/reject/ct/log/socket/masquerade", "run `modprobe nf_tables nft_redir nft_reject_inet nft_ct nfnetlink_log nft_log nft_socket nft_masq`", nftables.TableFamilyINet, queueInetProbe)
	caps.Bridge = check("bridge family with concatenated sets", "run `modprobe nf_tables_bridge` (CONFIG_NF_TABLES_BRIDGE)", nftables.TableFamilyBridge, queueBridgeProbe)
	caps.ARP = check("arp family", "use a kernel with CONFIG_NF_TABLES_ARP", nftables.TableFamilyARP, queueARPProbe)
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
		{Matches: []Match{SocketMark{Mark: DefaultListenerMark, Neg: true}}, Verdict: Drop{}},
		{Verdict: RejectAdminProhibited{}},
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: r.compile(&exprCtx{})})
	}
	out := c.AddChain(nfChain(t, Chain{Name: "probe_out", Type: "filter", Hook: "output", Priority: prioFilter}))
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: Rule{Matches: []Match{CtNew{}}, Counter: true}.compile(&exprCtx{})})
	post := c.AddChain(nfChain(t, Chain{Name: "probe_post", Type: "nat", Hook: "postrouting", Priority: prioSrcNAT}))
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: Rule{Matches: []Match{IfName{Out: true, Name: "probe0", Neg: true}}, Verdict: Masquerade{}}.compile(&exprCtx{})})
	pre := c.AddChain(nfChain(t, Chain{Name: "probe_pre", Type: "filter", Hook: "prerouting", Priority: prioGuard}))
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: Rule{Matches: []Match{MarkBits{Bits: PortVerifiedMark, Unset: true}}, Verdict: SetMarkBits{Bits: PortVerifiedMark, Clear: true}}.compile(&exprCtx{})})
}

func queueARPProbe(c *nftables.Conn, t *nftables.Table) {
	ch := c.AddChain(nfChain(t, Chain{Name: "probe_arp", Type: "filter", Hook: "input", Priority: prioARP}))
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: Rule{Matches: []Match{IfName{Name: "probe0"}, MarkBits{Bits: PortVerifiedMark, Unset: true}}, Counter: true, Verdict: Drop{}}.compile(&exprCtx{})})
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
	r = Rule{Matches: []Match{EtherType{Types: []uint16{EtherARP}}, SrcAddrIn{ARP: true, Set: s.Name}}, Verdict: SetMarkBits{Bits: PortVerifiedMark}}
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
