package gpu

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Node is a character device node that programs open to use GPUs.
type Node struct {
	// Path is relative to /dev, such as "nvidia0".
	Path         string
	Major, Minor uint32
}

// IsFake reports whether d is a simulated GPU.
func IsFake(d Device) bool { return strings.HasPrefix(d.UUID, "GPU-fake-") }

// nvidiaControl are the nodes every CUDA program opens besides its GPUs'.
var nvidiaControl = []string{"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"}

// Nodes returns each GPU's device node, by UUID, and the control nodes
// that every job using GPUs needs. Real GPUs are /dev/nvidiaN (N the
// index, which nvidia-smi numbers as the device minor) and the NVIDIA
// control nodes that exist. Simulated GPUs get nodes of the same names
// with a major number no driver on this machine has, so that opening an
// allowed one reaches "no such device" and a forbidden one the device
// filter, as real ones would.
func Nodes(devs []Device) (perGPU map[string]Node, control []Node, err error) {
	perGPU = map[string]Node{}
	fake := len(devs) > 0 && IsFake(devs[0])
	if fake {
		major, err := FakeMajor()
		if err != nil {
			return nil, nil, err
		}
		for _, d := range devs {
			perGPU[d.UUID] = Node{Path: fmt.Sprintf("nvidia%d", d.Index), Major: major, Minor: uint32(d.Index)}
		}
		return perGPU, []Node{{Path: "nvidiactl", Major: major, Minor: 255}}, nil
	}
	for _, d := range devs {
		n, err := stat(fmt.Sprintf("nvidia%d", d.Index))
		if err != nil {
			return nil, nil, fmt.Errorf("gpu: device node of GPU %d (%s): %w", d.Index, d.UUID, err)
		}
		perGPU[d.UUID] = n
	}
	names := append([]string(nil), nvidiaControl...)
	if caps, err := os.ReadDir("/dev/nvidia-caps"); err == nil {
		for _, c := range caps {
			names = append(names, filepath.Join("nvidia-caps", c.Name()))
		}
	}
	for _, name := range names {
		if n, err := stat(name); err == nil {
			control = append(control, n)
		}
	}
	return perGPU, control, nil
}

func stat(name string) (Node, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/dev", name), &st); err != nil {
		return Node{}, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR {
		return Node{}, fmt.Errorf("/dev/%s is not a character device", name)
	}
	return Node{Path: name, Major: uint32(st.Rdev >> 8 & 0xfff), Minor: uint32(st.Rdev&0xff | st.Rdev>>12&0xfff00)}, nil
}

// FakeMajor picks the major number of simulated GPUs' nodes: the first of
// the experimental range 240-254 that no driver has registered.
func FakeMajor() (uint32, error) {
	used := map[uint32]bool{}
	f, err := os.Open("/proc/devices")
	if err != nil {
		return 0, fmt.Errorf("gpu: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if s.Text() == "Block devices:" {
			break
		}
		if fields := strings.Fields(s.Text()); len(fields) == 2 {
			if n, err := strconv.ParseUint(fields[0], 10, 32); err == nil {
				used[uint32(n)] = true
			}
		}
	}
	for m := uint32(240); m <= 254; m++ {
		if !used[m] {
			return m, nil
		}
	}
	return 0, fmt.Errorf("gpu: no free major number for simulated GPUs in 240-254")
}

// driverPatterns are the NVIDIA driver's user-space files that CUDA
// programs load or run, as the NVIDIA container toolkit injects them.
var driverPatterns = []string{
	"/usr/lib/x86_64-linux-gnu/libcuda.so*", "/usr/lib/x86_64-linux-gnu/libnvidia-*.so*", "/usr/lib/x86_64-linux-gnu/libnvcuvid.so*",
	"/usr/lib64/libcuda.so*", "/usr/lib64/libnvidia-*.so*",
	"/usr/lib/aarch64-linux-gnu/libcuda.so*", "/usr/lib/aarch64-linux-gnu/libnvidia-*.so*",
	"/usr/bin/nvidia-smi", "/usr/bin/nvidia-debugdump", "/usr/bin/nvidia-cuda-mps-control", "/usr/bin/nvidia-cuda-mps-server",
}

// DriverFiles lists the node's NVIDIA driver files, which a job on its
// server's own root sees at the same paths; none where the driver is not
// installed (simulated GPUs need none).
var DriverFiles = sync.OnceValue(func() []string {
	var out []string
	for _, p := range driverPatterns {
		m, _ := filepath.Glob(p)
		out = append(out, m...)
	}
	return out
})
