//go:build !linux

package main

import "syscall"

// childAttr: outside Linux there is no parent-death signal; the child is stopped on a clean exit only.
func childAttr() *syscall.SysProcAttr { return nil }
