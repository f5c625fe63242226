package local

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strconv"
	"strings"

	"github.com/hac-project/hac/internal/vm"
)

// ruleset renders the whole table (ip hac by default) for the forwards:
//
//   - nat prerouting and output: DNAT public:port to the server (output
//     covers connections made on this machine, such as to 127.0.0.1);
//   - nat postrouting: masquerade loopback sources going to the servers;
//   - filter forward and output: a new forwarded connection goes on only if
//     one of its port's firewall rules allows its source (default deny);
//     nothing else enters the servers' subnet from outside but replies,
//     nor from the host's own processes but root's;
//   - filter input: from the servers' bridge the host answers only hac's
//     own ports on the gateway (and ping, and replies).
func ruleset(table, public, subnet, bridge, gateway string, rules vm.Rules) string {
	forwards := rules.Forwards
	fs := append([]vm.Forward(nil), forwards...)
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].Protocol != fs[j].Protocol {
			return fs[i].Protocol < fs[j].Protocol
		}
		return fs[i].PublicPort < fs[j].PublicPort
	})
	var dnat, check, allow strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&dnat, "\t\tip daddr %s %s dport %d dnat to %s:%d\n", public, f.Protocol, f.PublicPort, f.Address, f.PrivatePort)
		chain := fmt.Sprintf("allow_%s_%d", f.Protocol, f.PublicPort)
		fmt.Fprintf(&check, "\t\tct state new ct status dnat meta l4proto %s ct original ip daddr %s ct original proto-dst %d jump %s\n",
			f.Protocol, public, f.PublicPort, chain)
		fmt.Fprintf(&allow, "\tchain %s {\n", chain)
		for _, src := range f.Allow {
			fmt.Fprintf(&allow, "\t\tip saddr %s accept\n", src)
		}
		allow.WriteString("\t\tdrop\n\t}\n")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "add table ip %s\ndelete table ip %s\ntable ip %s {\n", table, table, table)
	fmt.Fprintf(&b, "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n%s\t}\n", dnat.String())
	fmt.Fprintf(&b, "\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n%s\t}\n", dnat.String())
	fmt.Fprintf(&b, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 127.0.0.0/8 ip daddr %s masquerade\n\t}\n", subnet)
	// Into the servers' subnet from elsewhere, only what a forward DNAT'd
	// (checked above) and replies.
	fmt.Fprintf(&b, "\tchain filter_forward {\n\t\ttype filter hook forward priority filter; policy accept;\n%s", check.String())
	fmt.Fprintf(&b, "\t\toifname %q iifname != %q ct state established,related accept\n\t\toifname %q iifname != %q drop\n\t}\n", bridge, bridge, bridge, bridge)
	// From the host itself, only root's processes open connections to the
	// servers (jobs and other users' processes share its network).
	fmt.Fprintf(&b, "\tchain filter_output {\n\t\ttype filter hook output priority filter; policy accept;\n%s", check.String())
	fmt.Fprintf(&b, "\t\toifname %q ct state established,related accept\n\t\toifname %q meta skuid 0 accept\n\t\toifname %q drop\n\t}\n", bridge, bridge, bridge)
	ports := append([]int(nil), rules.HostPorts...)
	sort.Ints(ports)
	fmt.Fprintf(&b, "\tchain filter_input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tiifname %q ct state established,related accept\n\t\tiifname %q ip protocol icmp accept\n", bridge, bridge)
	for _, p := range ports {
		fmt.Fprintf(&b, "\t\tiifname %q ip daddr %s tcp dport %d accept\n", bridge, gateway, p)
	}
	fmt.Fprintf(&b, "\t\tiifname %q drop\n\t}\n", bridge)
	b.WriteString(allow.String())
	b.WriteString("}\n")
	// Between servers the bridge forwards frames without the ip hooks:
	// the tenants' separation is a bridge-family table, by bridge port.
	// Each port may send only its server's address (no spoofing another
	// tenant's), and no IPv6, which servers are not given: it would
	// otherwise reach other servers and the host by link-local addresses,
	// past every rule above.
	fmt.Fprintf(&b, "add table bridge %s\ndelete table bridge %s\ntable bridge %s {\n", table, table, table)
	var own strings.Builder
	var all []string
	for _, group := range rules.Tenants {
		for _, m := range group {
			port := strconv.Quote(vethName(m.ID))
			all = append(all, port)
			fmt.Fprintf(&own, "\t\tiifname %s ether type ip ip saddr != %s drop\n", port, m.Address)
			fmt.Fprintf(&own, "\t\tiifname %s ether type arp arp saddr ip != %s drop\n", port, m.Address)
		}
	}
	// The hooks see every bridge of the host: only servers' ports are
	// hac's business (meta ibrname would be exact, but not every kernel
	// has it; hac's drivers on one host share the port prefix).
	others := fmt.Sprintf("\t\tiifname != %q accept\n", vethPrefix+"*")
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n" + others + "\t\tether type ip6 drop\n")
	b.WriteString(own.String())
	b.WriteString("\t}\n")
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n" + others + "\t\tether type ip6 drop\n")
	b.WriteString(own.String())
	for _, group := range rules.Tenants {
		if len(group) == 0 {
			continue
		}
		var ports []string
		for _, m := range group {
			ports = append(ports, strconv.Quote(vethName(m.ID)))
		}
		set := "{ " + strings.Join(ports, ", ") + " }"
		fmt.Fprintf(&b, "\t\tiifname %s oifname != %s drop\n", set, set)
	}
	// A port hac does not know of (a server being torn down) talks to no one.
	if len(all) > 0 {
		fmt.Fprintf(&b, "\t\tiifname != { %s } drop\n", strings.Join(all, ", "))
	} else {
		b.WriteString("\t\tdrop\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// ValidateForward checks a forward's fields before they reach nft.
func ValidateForward(f vm.Forward) error {
	if f.Protocol != "tcp" && f.Protocol != "udp" {
		return fmt.Errorf("vm/local: protocol %q: use tcp or udp", f.Protocol)
	}
	if f.PublicPort < 1 || f.PublicPort > 65535 || f.PrivatePort < 1 || f.PrivatePort > 65535 {
		return fmt.Errorf("vm/local: ports must be 1-65535")
	}
	if a, err := netip.ParseAddr(f.Address); err != nil || !a.Is4() {
		return fmt.Errorf("vm/local: server address %q", f.Address)
	}
	for _, src := range f.Allow {
		if p, err := netip.ParsePrefix(src); err != nil || !p.Addr().Is4() || p.Masked() != p {
			return fmt.Errorf("vm/local: source %q: want an IPv4 CIDR such as 203.0.113.0/24", src)
		}
	}
	return nil
}

// ApplyRules replaces the table with the rules for forwards, atomically.
func (d *Driver) ApplyRules(ctx context.Context, rules vm.Rules) error {
	for _, f := range rules.Forwards {
		if err := ValidateForward(f); err != nil {
			return err
		}
	}
	for _, p := range rules.HostPorts {
		if p < 1 || p > 65535 {
			return fmt.Errorf("vm/local: host port %d", p)
		}
	}
	for _, group := range rules.Tenants {
		for _, m := range group {
			if ip, err := netip.ParseAddr(m.Address); err != nil || !ip.Is4() {
				return fmt.Errorf("vm/local: server address %q", m.Address)
			}
			if err := validID(m.ID); err != nil {
				return err
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ensureBridge(); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset(d.cfg.Table, d.cfg.PublicAddress, d.subnet.String(), d.cfg.Bridge, d.gateway.String(), rules))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vm/local: nft: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// RemoveRules deletes the driver's table (when the driver is shut down for
// good).
func (d *Driver) RemoveRules(ctx context.Context) error {
	exec.CommandContext(ctx, "nft", "delete", "table", "bridge", d.cfg.Table).Run()
	return exec.CommandContext(ctx, "nft", "delete", "table", "ip", d.cfg.Table).Run()
}
