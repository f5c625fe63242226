package guard

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Limits bounds what peers may hold open.
type Limits struct {
	// Conns caps open connections in all; PerPeer caps those from one
	// remote address. Connections past a cap are closed at once.
	Conns, PerPeer int
}

// DefaultLimits leave room below a usual descriptor limit of 20,000 to
// 65,536 and let one address (a NAT, a busy server) hold hundreds.
var DefaultLimits = Limits{Conns: 8192, PerPeer: 512}

// Listen wraps ln so that it never holds more connections than l allows.
func Listen(ln net.Listener, l Limits) net.Listener {
	return &listener{Listener: ln, lim: l, peers: map[string]int{}}
}

type listener struct {
	net.Listener
	lim   Limits
	mu    sync.Mutex
	total int
	peers map[string]int
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := peerOf(c)
		l.mu.Lock()
		full := (l.lim.Conns > 0 && l.total >= l.lim.Conns) || (l.lim.PerPeer > 0 && l.peers[peer] >= l.lim.PerPeer)
		if !full {
			l.total++
			l.peers[peer]++
		}
		l.mu.Unlock()
		if full {
			c.Close()
			continue
		}
		return &conn{Conn: c, l: l, peer: peer}, nil
	}
}

// peerOf names a connection's peer: its IPv4 address, or its IPv6 /64
// (one host usually holds a whole /64).
func peerOf(c net.Conn) string {
	a, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return c.RemoteAddr().String()
	}
	if v4 := a.IP.To4(); v4 != nil {
		return v4.String()
	}
	return a.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

func (l *listener) release(peer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.peers[peer]--; l.peers[peer] <= 0 {
		delete(l.peers, peer)
	}
}

// conn gives its place back once, when it closes.
type conn struct {
	net.Conn
	l    *listener
	peer string
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() { c.l.release(c.peer) })
	return c.Conn.Close()
}

// Server returns an http.Server for h that serves HTTP/1.1 and HTTP/2
// (over TLS: the caller sets TLSConfig and calls ServeTLS) with bounded
// headers, a deadline for them and for the TLS handshake, idle
// connections closed, and a cap on concurrent streams per connection.
func Server(h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          256,
			MaxReceiveBufferPerConnection: 4 << 20,
			MaxReceiveBufferPerStream:     1 << 20,
		},
	}
}

// MaxMessageBytes bounds one API message, compressed or not, on the
// control plane; the agent allows larger ones (workspace manifests) once a
// ticket was checked.
const MaxMessageBytes = 4 << 20
