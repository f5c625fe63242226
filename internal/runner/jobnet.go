package runner

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Every sandboxed job has a network namespace of its own: loopback, and
// eth0, one end of a veth pair whose other end (hj + 8 hex digits) is on
// the node. The job's address is a /32 from jobSubnet, routed to that
// veth; its default route goes through a link-local gateway the node
// answers for (proxy ARP), as Calico does, so that no bridge is needed.
// Traffic out is masqueraded; between two jobs' veths, from a job to the
// node itself, and to link-local addresses (a cloud's instance metadata,
// 169.254.169.254, with the node's credentials) it is dropped (nft table
// hac_jobs): a job reaches the network as before, but no other job's
// ports and no node service (another tenant's notebook, the agent's own
// ports, 127.0.0.1).

// jobSubnet holds jobs' addresses (the shared address space of RFC 6598,
// which no site routes).
var jobSubnet = &net.IPNet{IP: net.IPv4(100, 64, 0, 0).To4(), Mask: net.CIDRMask(10, 32)}

// jobGateway is the jobs' default gateway, answered by the node's end.
var jobGateway = net.IPv4(169, 254, 1, 1).To4()

const jobVethPrefix = "hj"

// jobRules is the node's nft table for jobs' traffic.
var jobRules = fmt.Sprintf(`add table ip hac_jobs
delete table ip hac_jobs
table ip hac_jobs {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[1]s oifname != "%[2]s*" masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "%[2]s*" oifname "%[2]s*" drop
		iifname "%[2]s*" ip daddr 169.254.0.0/16 drop
		oifname "%[2]s*" ct state established,related accept
		oifname "%[2]s*" drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "%[2]s*" ct state established,related accept
		iifname "%[2]s*" drop
	}
}
`, jobSubnet, jobVethPrefix)

// PrepareJobNetwork sets the node up for jobs' networks: forwarding on,
// and the hac_jobs table. The agent calls it once at start.
func PrepareJobNetwork() error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("%w: turn on IP forwarding for jobs' networks: %v", ErrSandbox, err)
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(jobRules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: jobs' network rules (nft, nftables): %v: %s", ErrSandbox, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// attachNetwork gives the network namespace of process pid (a warm init)
// loopback and a veth to the node.
func attachNetwork(pid int) error {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := h.LinkSetUp(lo); err != nil {
			return err
		}
	}
	ip, err := freeJobAddress()
	if err != nil {
		return err
	}
	var b [4]byte
	rand.Read(b[:])
	host := jobVethPrefix + hex.EncodeToString(b[:])
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: host + "p", PeerNamespace: netlink.NsFd(ns)}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth for a job: %w", err)
	}
	hostLink, err := netlink.LinkByName(host)
	if err != nil {
		return err
	}
	// The node answers ARP for the gateway; its end needs no address.
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+host+"/proxy_arp", []byte("1"), 0o644); err != nil {
		netlink.LinkDel(hostLink)
		return err
	}
	if err := netlink.LinkSetUp(hostLink); err != nil {
		netlink.LinkDel(hostLink)
		return err
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: hostLink.Attrs().Index, Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		netlink.LinkDel(hostLink)
		return err
	}
	inner, err := h.LinkByName(host + "p")
	if err == nil {
		err = h.LinkSetName(inner, "eth0")
	}
	if err == nil {
		err = h.AddrAdd(inner, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}})
	}
	if err == nil {
		err = h.LinkSetUp(inner)
	}
	if err == nil {
		err = h.RouteAdd(&netlink.Route{LinkIndex: inner.Attrs().Index, Dst: &net.IPNet{IP: jobGateway, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
	}
	if err == nil {
		err = h.RouteAdd(&netlink.Route{LinkIndex: inner.Attrs().Index, Gw: jobGateway})
	}
	if err != nil {
		netlink.LinkDel(hostLink) // the job's end goes with it
		return fmt.Errorf("a job's network: %w", err)
	}
	return nil
}

// freeJobAddress picks an address of jobSubnet that no route of the node
// uses yet (agents on one node share the subnet).
func freeJobAddress() (net.IP, error) {
	for range 64 {
		var b [4]byte
		rand.Read(b[:])
		n := binary.BigEndian.Uint32(jobSubnet.IP)&0xffc00000 | binary.BigEndian.Uint32(b[:])&0x003fffff
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, n)
		if ip[3] == 0 || ip[3] == 255 {
			continue
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}}, netlink.RT_FILTER_DST)
		if err == nil && len(routes) == 0 {
			return ip, nil
		}
	}
	return nil, fmt.Errorf("no free address for a job in %s", jobSubnet)
}
