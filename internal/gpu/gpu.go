// Package gpu finds a node's GPUs. A Provider lists Devices; the fake
// provider simulates GPUs where none exist ("fake:8x80GiB"), and the
// nvidia-smi provider reads the real ones from nvidia-smi's CSV output.
package gpu

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Device is one GPU.
type Device struct {
	Index     int
	UUID      string
	Name      string
	MemoryMiB int64
}

// Provider lists the GPUs of this machine.
type Provider interface {
	Devices(ctx context.Context) ([]Device, error)
}

// Fake simulates identical GPUs with stable UUIDs derived from a seed (the
// node's name), so that restarts keep them.
type Fake struct {
	Count     int
	MemoryMiB int64
	Seed      string
}

var _ Provider = Fake{}

// Devices returns the simulated GPUs.
func (f Fake) Devices(context.Context) ([]Device, error) {
	out := make([]Device, f.Count)
	for i := range out {
		out[i] = Device{Index: i, UUID: fmt.Sprintf("GPU-fake-%s-%d", f.Seed, i), Name: "HAC Simulated GPU", MemoryMiB: f.MemoryMiB}
	}
	return out, nil
}

var fakeSpec = regexp.MustCompile(`^fake:([0-9]+)x([0-9]+)(GiB|MiB)$`)

// ErrSpec is returned for a --gpus value that cannot be understood.
var ErrSpec = errors.New("gpu: bad --gpus value")

// Parse turns a --gpus value into a provider: "fake:8x80GiB",
// "nvidia-smi", or "auto" (nvidia-smi when it finds GPUs, else the
// fallback).
func Parse(spec, seed string) (Provider, error) {
	switch spec {
	case "nvidia-smi":
		return NvidiaSMI{}, nil
	case "auto", "":
		return Auto{Fallback: Fake{Count: 8, MemoryMiB: 80 * 1024, Seed: seed}}, nil
	}
	m := fakeSpec.FindStringSubmatch(spec)
	if m == nil {
		return nil, fmt.Errorf("%w %q: use auto, nvidia-smi, or fake:COUNTxSIZE such as fake:8x80GiB", ErrSpec, spec)
	}
	n, err1 := strconv.Atoi(m[1])
	size, err2 := strconv.ParseInt(m[2], 10, 64)
	if err1 != nil || err2 != nil || n < 1 || n > 64 || size < 1 || size > 1<<30 {
		return nil, fmt.Errorf("%w %q: 1 to 64 GPUs of a positive size", ErrSpec, spec)
	}
	if m[3] == "GiB" {
		size *= 1024
	}
	return Fake{Count: n, MemoryMiB: size, Seed: seed}, nil
}

// Auto uses nvidia-smi when it lists GPUs, else its fallback.
type Auto struct{ Fallback Provider }

// Devices returns the real GPUs if any, else the fallback's.
func (a Auto) Devices(ctx context.Context) ([]Device, error) {
	if d, err := (NvidiaSMI{}).Devices(ctx); err == nil && len(d) > 0 {
		return d, nil
	}
	return a.Fallback.Devices(ctx)
}

// NvidiaSMI lists GPUs with nvidia-smi.
type NvidiaSMI struct{}

// Devices runs nvidia-smi and parses its CSV output.
func (NvidiaSMI) Devices(ctx context.Context) ([]Device, error) {
	out, err := exec.CommandContext(ctx, "nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return nil, fmt.Errorf("gpu: nvidia-smi: %w", err)
	}
	return ParseNvidiaSMI(string(out))
}

// ParseNvidiaSMI parses "index, uuid, name, memory.total" CSV lines (memory
// in MiB, as nvidia-smi prints with nounits).
func ParseNvidiaSMI(out string) ([]Device, error) {
	var devs []Device
	for lineNo, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 4 {
			return nil, fmt.Errorf("gpu: nvidia-smi line %d: want 4 fields, got %d", lineNo+1, len(f))
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		idx, err := strconv.Atoi(f[0])
		if err != nil || idx < 0 {
			return nil, fmt.Errorf("gpu: nvidia-smi line %d: bad index %q", lineNo+1, f[0])
		}
		mem, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil || mem <= 0 {
			return nil, fmt.Errorf("gpu: nvidia-smi line %d: bad memory %q", lineNo+1, f[3])
		}
		if !strings.HasPrefix(f[1], "GPU-") {
			return nil, fmt.Errorf("gpu: nvidia-smi line %d: bad uuid %q", lineNo+1, f[1])
		}
		devs = append(devs, Device{Index: idx, UUID: f[1], Name: f[2], MemoryMiB: mem})
	}
	return devs, nil
}
