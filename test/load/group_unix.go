//go:build unix && !linux

package main

import (
	"os"
	"os/exec"
	"syscall"
)

// ownGroup puts a server in a process group of its own.
func ownGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

func killGroup(p *os.Process) { _ = syscall.Kill(-p.Pid, syscall.SIGKILL) }
