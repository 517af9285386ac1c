#!/usr/bin/env python3
"""The same test guest under Debian's qemu-system-x86_64 -M pc -accel kvm:
its RAM passes the same checker, so our VMM and QEMU run the very same
workload."""

import ft_guest
import ferrytest as ft


if __name__ == "__main__":
    ft.require_qemu()
    ft_guest.main_for(ft_guest.qemu_vm)
