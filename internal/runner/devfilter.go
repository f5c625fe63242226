package runner

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A device rule lets the job open (or only create) character devices of
// one major number, one minor or all (minor < 0).
type devRule struct {
	major        uint32
	minor        int64
	read, create bool // read also means write
}

// Pseudo-terminal slaves: the host's (the job's terminal) and the job's own.
const ptsMajorFirst, ptsMajorLast = 136, 143

// deviceRules lists what a job may do with device nodes: open the
// standard and allowed nodes, create (but not open) the others it is
// shown, and use pseudo-terminals.
func deviceRules(devices []Device) []devRule {
	var rules []devRule
	for _, d := range append(append([]Device(nil), standardDevices...), devices...) {
		rules = append(rules, devRule{major: d.Major, minor: int64(d.Minor), read: d.Allow, create: true})
	}
	rules = append(rules, devRule{major: 5, minor: 2, read: true, create: true}) // /dev/ptmx
	for m := uint32(ptsMajorFirst); m <= ptsMajorLast; m++ {
		rules = append(rules, devRule{major: m, minor: -1, read: true})
	}
	return rules
}

// BPF opcodes of a cgroup device program (linux/bpf.h, bpf_common.h).
const (
	bpfLdxMemW  = 0x61 // r_dst = *(u32 *)(r_src + off)
	bpfMov64Reg = 0xbf
	bpfMov64Imm = 0xb7
	bpfAnd64Imm = 0x57
	bpfRsh64Imm = 0x77
	bpfJneImm   = 0x55
	bpfExit     = 0x95

	bpfProgTypeCgroupDevice = 15
	bpfCgroupDevice         = 6 // attach type
	bpfProgLoad             = 5
	bpfProgAttach           = 8
	bpfFAllowMulti          = 2

	devcgDevChar  = 2
	devcgAccMknod = 1
	devcgAccRead  = 2
	devcgAccWrite = 4
	bpfRegCtx     = 1
	bpfRegAccess  = 2
	bpfRegType    = 3
	bpfRegMajor   = 4
	bpfRegMinor   = 5
	bpfRegScratch = 6
	bpfRegReturn  = 0
)

type bpfInsn struct {
	code byte
	regs byte // dst in the low nibble, src in the high one
	off  int16
	imm  int32
}

func insn(code byte, dst, src byte, off int16, imm int32) bpfInsn {
	return bpfInsn{code: code, regs: dst | src<<4, off: off, imm: imm}
}

// deviceProgram compiles rules into a BPF_PROG_TYPE_CGROUP_DEVICE program
// that allows what a rule allows and denies everything else.
func deviceProgram(rules []devRule) []bpfInsn {
	// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
	p := []bpfInsn{
		insn(bpfLdxMemW, bpfRegAccess, bpfRegCtx, 0, 0),
		insn(bpfMov64Reg, bpfRegType, bpfRegAccess, 0, 0),
		insn(bpfAnd64Imm, bpfRegType, 0, 0, 0xffff),
		insn(bpfRsh64Imm, bpfRegAccess, 0, 0, 16),
		insn(bpfLdxMemW, bpfRegMajor, bpfRegCtx, 4, 0),
		insn(bpfLdxMemW, bpfRegMinor, bpfRegCtx, 8, 0),
	}
	for _, r := range rules {
		var allowed int32
		if r.create {
			allowed |= devcgAccMknod
		}
		if r.read {
			allowed |= devcgAccRead | devcgAccWrite
		}
		// Each block is 8 instructions; a mismatch jumps to the next one.
		minorCheck := insn(bpfJneImm, bpfRegMinor, 0, 5, int32(r.minor))
		if r.minor < 0 {
			minorCheck = insn(bpfMov64Reg, bpfRegScratch, bpfRegMinor, 0, 0) // any minor
		}
		p = append(p,
			insn(bpfJneImm, bpfRegType, 0, 7, devcgDevChar),
			insn(bpfJneImm, bpfRegMajor, 0, 6, int32(r.major)),
			minorCheck,
			insn(bpfMov64Reg, bpfRegScratch, bpfRegAccess, 0, 0),
			insn(bpfAnd64Imm, bpfRegScratch, 0, 0, ^allowed),
			insn(bpfJneImm, bpfRegScratch, 0, 2, 0),
			insn(bpfMov64Imm, bpfRegReturn, 0, 0, 1),
			insn(bpfExit, 0, 0, 0, 0),
		)
	}
	return append(p, insn(bpfMov64Imm, bpfRegReturn, 0, 0, 0), insn(bpfExit, 0, 0, 0, 0))
}

func encode(p []bpfInsn) []byte {
	out := make([]byte, 0, 8*len(p))
	for _, i := range p {
		out = append(out, i.code, i.regs)
		out = binary.LittleEndian.AppendUint16(out, uint16(i.off))
		out = binary.LittleEndian.AppendUint32(out, uint32(i.imm))
	}
	return out
}

// deviceFilters loads each distinct device program once and keeps it for
// the next job with the same rules (a node has few GPU sets), since the
// kernel's verifier takes longer than attaching. The zero value keeps
// nothing.
type deviceFilters struct {
	mu    sync.Mutex
	keep  bool
	progs map[string]int // program code -> loaded program fd
}

// program returns a loaded program for rules; release closes it unless
// it is kept.
func (d *deviceFilters) program(rules []devRule) (fd int, release func(), err error) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return 0, nil, fmt.Errorf("runner: the device filter is built for little-endian machines")
	}
	code := encode(deviceProgram(rules))
	d.mu.Lock()
	defer d.mu.Unlock()
	if fd, ok := d.progs[string(code)]; ok {
		return fd, func() {}, nil
	}
	p, err := loadDeviceProgram(code, nil)
	if err != nil {
		// Load again with the verifier's log, to say why.
		log := make([]byte, 64<<10)
		_, err = loadDeviceProgram(code, log)
		return 0, nil, fmt.Errorf("runner: load the device filter: %w: %s", err, cstring(log))
	}
	fd = int(p)
	if !d.keep {
		return fd, func() { unix.Close(fd) }, nil
	}
	if d.progs == nil {
		d.progs = map[string]int{}
	}
	d.progs[string(code)] = fd
	return fd, func() {}, nil
}

// close releases the kept programs; attached ones stay with their cgroups.
func (d *deviceFilters) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, fd := range d.progs {
		unix.Close(fd)
	}
	d.progs = nil
}

// attach attaches the program for rules to the cgroup v2 folder dir. The
// kernel keeps it there while the cgroup exists.
func (d *deviceFilters) attach(dir string, rules []devRule) error {
	fd, release, err := d.program(rules)
	if err != nil {
		return err
	}
	defer release()
	cg, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("runner: device filter: %w", err)
	}
	defer unix.Close(cg)
	attach := struct{ targetFd, attachBpfFd, attachType, attachFlags, replaceBpfFd uint32 }{
		targetFd: uint32(cg), attachBpfFd: uint32(fd), attachType: bpfCgroupDevice, attachFlags: bpfFAllowMulti,
	}
	if _, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgAttach, uintptr(unsafe.Pointer(&attach)), unsafe.Sizeof(attach)); errno != 0 {
		return fmt.Errorf("runner: attach the device filter to %s: %w", dir, errno)
	}
	return nil
}

// loadDeviceProgram loads a cgroup device program, with the verifier's
// log in log when it is not nil (which is slower).
func loadDeviceProgram(code, log []byte) (uintptr, error) {
	license := []byte("Apache-2.0\x00")
	load := struct {
		progType, insnCnt uint32
		insns, license    uint64
		logLevel, logSize uint32
		logBuf            uint64
		kernVersion       uint32
		progFlags         uint32
	}{
		progType: bpfProgTypeCgroupDevice, insnCnt: uint32(len(code) / 8),
		insns:   uint64(uintptr(unsafe.Pointer(&code[0]))),
		license: uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	if log != nil {
		load.logLevel, load.logSize, load.logBuf = 1, uint32(len(log)), uint64(uintptr(unsafe.Pointer(&log[0])))
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgLoad, uintptr(unsafe.Pointer(&load)), unsafe.Sizeof(load))
	runtime.KeepAlive(code)
	runtime.KeepAlive(license)
	runtime.KeepAlive(log)
	if errno != 0 {
		return 0, errno
	}
	return fd, nil
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// writeV1DeviceRules applies rules in a v1 devices cgroup, for hosts
// without cgroup v2.
func writeV1DeviceRules(dir string, rules []devRule) error {
	if err := os.WriteFile(filepath.Join(dir, "devices.deny"), []byte("a"), 0o644); err != nil {
		return err
	}
	for _, r := range rules {
		minor := "*"
		if r.minor >= 0 {
			minor = fmt.Sprint(r.minor)
		}
		access := ""
		if r.read {
			access += "rw"
		}
		if r.create {
			access += "m"
		}
		line := fmt.Sprintf("c %d:%s %s", r.major, minor, access)
		if err := os.WriteFile(filepath.Join(dir, "devices.allow"), []byte(line), 0o644); err != nil {
			return fmt.Errorf("runner: devices.allow %q: %w", line, err)
		}
	}
	return nil
}
