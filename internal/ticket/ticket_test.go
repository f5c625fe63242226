package ticket

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	key := []byte("k")
	now := time.Unix(1000, 0)
	c := Claims{JobID: 7, Node: "n1", Model: "small.16gb", MemoryMiB: 16384, GPUs: []string{"GPU-1"}, Nodes: 1, Expires: 1060}
	tok := Sign(key, c)
	got, err := Verify(key, tok, now)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	if _, err := Verify([]byte("other"), tok, now); !errors.Is(err, ErrInvalid) {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := Verify(key, tok, time.Unix(1061, 0)); !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	if _, err := Verify(key, tok[:len(tok)-2]+"xx", now); !errors.Is(err, ErrInvalid) {
		t.Errorf("tampered: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	key := []byte("k")
	f.Add(Sign(key, Claims{JobID: 1, Expires: 2}))
	f.Add("a.b")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := Verify(key, tok, time.Unix(0, 0))
		if err != nil {
			return
		}
		// An accepted ticket's claims survive a round trip unchanged.
		again, err := Verify(key, Sign(key, c), time.Unix(0, 0))
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip of %+v: %+v, %v", c, again, err)
		}
	})
}
