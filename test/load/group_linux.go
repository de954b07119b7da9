package main

import (
	"os"
	"os/exec"
	"syscall"
)

// ownGroup puts a server in a process group of its own, and has the kernel
// kill it if the harness dies without cleaning up (kill -9, a crash).
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func killGroup(p *os.Process) { _ = syscall.Kill(-p.Pid, syscall.SIGKILL) }
