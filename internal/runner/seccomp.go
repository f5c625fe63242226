package runner

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A job's seccomp filter refuses what an unprivileged program needs no
// part of and what widens the kernel it can reach: creating user
// namespaces (which would give it capabilities over new namespaces, the
// usual path to kernel exploits; clone3 is answered ENOSYS so that libc
// falls back to clone, whose flags a filter can see), BPF, userfaultfd,
// keyrings, kernel modules and kexec. Other architectures' system calls
// (i386, x32) are refused, so none of this can be called around.

// seccomp_data offsets (linux/seccomp.h).
const (
	seccompNr   = 0
	seccompArch = 4
	seccompArg0 = 16 // low 32 bits, little-endian
)

const (
	auditArchX86_64  = 0xc000003e
	auditArchAARCH64 = 0xc00000b7
	x32SyscallBit    = 0x40000000
)

// deniedJobSyscalls answer EPERM.
var deniedJobSyscalls = []uintptr{
	unix.SYS_BPF, unix.SYS_USERFAULTFD, unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE, unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD,
	unix.SYS_SETNS,
}

// bpfProgram is classic BPF with symbolic jump targets.
type bpfProgram struct {
	insns  []unix.SockFilter
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at     int
	jt, jf string
}

func (p *bpfProgram) stmt(code uint16, k uint32) {
	p.insns = append(p.insns, unix.SockFilter{Code: code, K: k})
}

func (p *bpfProgram) jump(code uint16, k uint32, jt, jf string) {
	p.fixups = append(p.fixups, fixup{at: len(p.insns), jt: jt, jf: jf})
	p.insns = append(p.insns, unix.SockFilter{Code: code, K: k})
}

func (p *bpfProgram) label(name string) { p.labels[name] = len(p.insns) }

// resolve fills in the jumps; "" means the next instruction.
func (p *bpfProgram) resolve() ([]unix.SockFilter, error) {
	for _, f := range p.fixups {
		for _, t := range []struct {
			name string
			dst  *uint8
		}{{f.jt, &p.insns[f.at].Jt}, {f.jf, &p.insns[f.at].Jf}} {
			if t.name == "" {
				continue
			}
			to, ok := p.labels[t.name]
			off := to - f.at - 1
			if !ok || off < 0 || off > 255 {
				return nil, fmt.Errorf("runner: seccomp jump to %q", t.name)
			}
			*t.dst = uint8(off)
		}
	}
	return p.insns, nil
}

// jobFilter is the seccomp program of a job on this architecture.
func jobFilter() ([]unix.SockFilter, error) {
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = auditArchX86_64
	case "arm64":
		arch = auditArchAARCH64
	default:
		return nil, fmt.Errorf("runner: no seccomp filter for %s", runtime.GOARCH)
	}
	const (
		ld   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		jset = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
	)
	p := &bpfProgram{labels: map[string]int{}}
	p.stmt(ld, seccompArch)
	p.jump(jeq, arch, "", "deny")
	p.stmt(ld, seccompNr)
	if arch == auditArchX86_64 {
		p.jump(jge, x32SyscallBit, "deny", "")
	}
	for _, nr := range deniedJobSyscalls {
		p.jump(jeq, uint32(nr), "deny", "")
	}
	p.jump(jeq, unix.SYS_UNSHARE, "flags", "")
	p.jump(jeq, unix.SYS_CLONE, "flags", "")
	p.jump(jeq, unix.SYS_CLONE3, "enosys", "")
	p.stmt(ret, unix.SECCOMP_RET_ALLOW)
	p.label("flags")
	p.stmt(ld, seccompArg0)
	p.jump(jset, unix.CLONE_NEWUSER, "deny", "")
	p.stmt(ret, unix.SECCOMP_RET_ALLOW)
	p.label("deny")
	p.stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM))
	p.label("enosys")
	p.stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS))
	return p.resolve()
}

// installJobFilter puts the job's filter on this thread (no_new_privs
// must be set); the program forked from it inherits the filter.
func installJobFilter() error {
	insns, err := jobFilter()
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		return fmt.Errorf("runner: install the seccomp filter: %w", err)
	}
	runtime.KeepAlive(insns)
	return nil
}
