package local

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsName is the named network namespace of a server.
func netnsName(id string) string { return "hac-" + id }

// vethPrefix starts the host end of every server's veth pair.
const vethPrefix = "hacv-"

// vethName is the host end of a server's veth pair (at most 15 bytes).
func vethName(id string) string {
	n := vethPrefix + id
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

// ensureBridge makes the bridge with the gateway address, once.
func (d *Driver) ensureBridge() error {
	link, err := netlink.LinkByName(d.cfg.Bridge)
	if err != nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: d.cfg.Bridge}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("vm/local: create bridge %s: %w", d.cfg.Bridge, err)
		}
		if link, err = netlink.LinkByName(d.cfg.Bridge); err != nil {
			return err
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: d.gateway, Mask: d.subnet.Mask}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("vm/local: address the bridge: %w", err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return err
	}
	// Connections to the public loopback address are DNATed to the bridge;
	// the kernel routes them only with route_localnet, which is set on the
	// bridge alone (on every interface it would let other hosts' packets
	// reach this machine's loopback services).
	os.WriteFile("/proc/sys/net/ipv4/conf/"+d.cfg.Bridge+"/route_localnet", []byte("1"), 0o644)
	os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	return nil
}

// setupNetwork makes a server's namespace with eth0 at addr on the bridge.
func (d *Driver) setupNetwork(id, addr string) error {
	if err := d.ensureBridge(); err != nil {
		return err
	}
	ip := net.ParseIP(addr).To4()
	if ip == nil || !d.subnet.Contains(ip) {
		return fmt.Errorf("vm/local: address %q is not in %s", addr, d.subnet)
	}
	ns, err := newNamedNetns(netnsName(id))
	if err != nil {
		return err
	}
	defer ns.Close()
	br, err := netlink.LinkByName(d.cfg.Bridge)
	if err != nil {
		return err
	}
	host, peer := vethName(id), "hacp-"+id
	if len(peer) > 15 {
		peer = peer[:15]
	}
	netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}})
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MasterIndex: br.Attrs().Index}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("vm/local: veth for %s: %w", id, err)
	}
	hostLink, err := netlink.LinkByName(host)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(hostLink); err != nil {
		return err
	}
	peerLink, err := netlink.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetNsFd(peerLink, int(ns)); err != nil {
		return fmt.Errorf("vm/local: move veth into %s: %w", netnsName(id), err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	inner, err := h.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := h.LinkSetName(inner, "eth0"); err != nil {
		return err
	}
	if err := h.AddrAdd(inner, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: d.subnet.Mask}}); err != nil {
		return err
	}
	if err := h.LinkSetUp(inner); err != nil {
		return err
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		h.LinkSetUp(lo)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: inner.Attrs().Index, Gw: d.gateway}); err != nil {
		return err
	}
	// The namespace belongs to the host's user namespace, not the
	// server's, so the server's root has no CAP_NET_BIND_SERVICE in it:
	// ports below 1024 (sshd's 22) are open to every process of the
	// server instead, as container engines do.
	return netnsSysctls(ns, map[string]string{
		"net/ipv4/ip_unprivileged_port_start": "0",
		"net/ipv4/ping_group_range":           "0 2147483647",
	})
}

// netnsSysctls writes sysctls of a network namespace, from a thread that
// enters it and ends with its goroutine (it never unlocks).
func netnsSysctls(ns netns.NsHandle, values map[string]string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("vm/local: enter the server's network namespace: %w", err)
			return
		}
		for k, v := range values {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				errc <- fmt.Errorf("vm/local: sysctl %s in the server's namespace: %w", k, err)
				return
			}
		}
		errc <- nil
	}()
	return <-errc
}

// netnsDir is where named network namespaces are kept (iproute2's).
const netnsDir = "/run/netns"

// sharedNetnsDir makes netnsDir a mount point with shared propagation, as
// ip netns add does. Otherwise the first ip netns add on the host (an
// operator's) bind-mounts the folder over itself and hides the servers'
// namespaces under it, which can then be neither found nor removed.
func sharedNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	for made := false; ; made = true {
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if err != unix.EINVAL || made {
			return fmt.Errorf("vm/local: make %s shared: %w", netnsDir, err)
		}
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("vm/local: bind %s: %w", netnsDir, err)
		}
	}
}

// newNamedNetns creates /run/netns/NAME without moving the caller into it:
// a goroutine locked to its own thread creates it, and never unlocks, so
// that the thread, left inside the new namespace, exits with it.
func newNamedNetns(name string) (netns.NsHandle, error) {
	if h, err := netns.GetFromName(name); err == nil {
		return h, nil
	}
	if err := sharedNetnsDir(); err != nil {
		return 0, err
	}
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		return 0, fmt.Errorf("vm/local: create netns %s: %w", name, r.err)
	}
	return r.h, nil
}

// teardownNetwork removes a server's namespace and veth; missing parts are
// fine.
func (d *Driver) teardownNetwork(id string) {
	netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: vethName(id)}})
	netns.DeleteNamed(netnsName(id))
}
