// Package local is the server driver for one machine: each server is a runc
// container with its own network namespace on a bridge, an overlay root
// filesystem over a server image, a hostname, CPU and memory limits, and
// OpenSSH's sshd as its first process, with the key pair's public key
// authorized for user ubuntu (password login off).
//
// Port forwarding is nftables DNAT from the public address to the server;
// the firewall drops forwarded connections unless a rule allows their
// protocol, public port and source. The driver owns one nftables table
// ("ip hac" by default) and nothing else, and rewrites it atomically with
// nft -f.
//
// Layout under DataDir:
//
//	images/NAME/rootfs     a server image (the overlay's lower layer)
//	servers/ID/upper,work  the server's overlay layers
//	servers/ID/bundle      the OCI bundle (config.json, rootfs mount point)
//	servers/ID/bin         /usr/local/bin in the server (hac and its aliases)
//	runc/                  runc's state
package local
