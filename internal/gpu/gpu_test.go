package gpu

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	p, err := Parse("fake:2x16GiB", "n")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := p.Devices(context.Background())
	want := []Device{{0, "GPU-fake-n-0", "HAC Simulated GPU", 16384}, {1, "GPU-fake-n-1", "HAC Simulated GPU", 16384}}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("devices = %+v", d)
	}
	for _, bad := range []string{"fake:0x80GiB", "fake:8x80GB", "fake:100x1GiB", "nvml", "fake:8x0MiB"} {
		if _, err := Parse(bad, "n"); !errors.Is(err, ErrSpec) {
			t.Errorf("Parse(%q) = %v, want ErrSpec", bad, err)
		}
	}
}

func TestParseNvidiaSMI(t *testing.T) {
	out := "0, GPU-6c0e3a1e-1f4b-2d4e-a1b2-000000000001, NVIDIA H200, 143771\n1, GPU-6c0e3a1e-1f4b-2d4e-a1b2-000000000002, NVIDIA H200, 143771\n"
	d, err := ParseNvidiaSMI(out)
	if err != nil || len(d) != 2 || d[1].MemoryMiB != 143771 || d[0].Name != "NVIDIA H200" {
		t.Fatalf("ParseNvidiaSMI = %+v, %v", d, err)
	}
	for _, bad := range []string{"0, GPU-x, n", "x, GPU-x, n, 1", "0, bad, n, 1", "0, GPU-x, n, -5"} {
		if _, err := ParseNvidiaSMI(bad); err == nil {
			t.Errorf("ParseNvidiaSMI(%q) accepted", bad)
		}
	}
}

func FuzzParseNvidiaSMI(f *testing.F) {
	f.Add("0, GPU-1, NVIDIA H200, 143771\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		devs, err := ParseNvidiaSMI(s)
		if err != nil {
			return
		}
		for _, d := range devs {
			if d.MemoryMiB <= 0 || d.Index < 0 {
				t.Fatalf("accepted a bad device %+v", d)
			}
		}
	})
}

func TestParseComputeApps(t *testing.T) {
	u, err := ParseComputeApps("1234, 320\n1234, 100\n99, 0\n")
	if err != nil || u[1234] != 420 || u[99] != 0 {
		t.Fatalf("ParseComputeApps = %v, %v", u, err)
	}
	for _, bad := range []string{"x, 1", "1, -1", "1"} {
		if _, err := ParseComputeApps(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseComputeApps(f *testing.F) {
	f.Add("1234, 320\n")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseComputeApps(s)
		if err != nil {
			return
		}
		for pid, mib := range u {
			if pid <= 0 || mib < 0 {
				t.Fatalf("accepted pid %d mib %d", pid, mib)
			}
		}
	})
}
