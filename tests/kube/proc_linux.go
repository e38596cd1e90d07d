package main

import "syscall"

// childAttr makes the kernel kill the child when this process dies, even by SIGKILL.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
