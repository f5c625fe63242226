package guard

import (
	"net"
	"testing"
	"time"
)

// TestListenCapsPeers: past the per-peer cap a peer's new connections are
// closed at once, while another peer still gets in, and closing gives the
// place back.
func TestListenCapsPeers(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listen(raw, Limits{Conns: 100, PerPeer: 3})
	defer ln.Close()
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	closedByServer := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !isTimeout(err)
	}
	var served []net.Conn
	for i := 0; i < 3; i++ {
		defer dial("127.0.0.2").Close()
		served = append(served, <-accepted)
	}
	if extra := dial("127.0.0.2"); !closedByServer(extra) {
		t.Fatal("a fourth connection from one peer was kept")
	}
	other := dial("127.0.0.3")
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("another peer was not accepted")
	}
	other.Close()
	// The server closing one of the peer's connections gives its place back.
	served[0].Close()
	defer dial("127.0.0.2").Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the peer was not accepted again after a close")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
