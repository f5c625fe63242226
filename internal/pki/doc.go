// Package pki is hac's certificate authority and how its clients trust it.
//
// The control plane makes its own CA on first start (DATA_DIR/tls). The CA
// signs the API's certificate and each node's worker certificate, issued
// for NODE.node.hac when the node registers. Clients and agents do not use
// the system's roots for hac's own CA: they pin it, by the SHA-256 of its
// public key ("sha256:HEX", as kubeadm's discovery hash). The pin travels
// inside join tokens, client configs and grants, so nobody is asked to
// trust a certificate on first use.
package pki
