#!/usr/bin/env python3
"""Boot the test guest on KVM under ferry (1 and 2 vCPUs, 512 MiB), watch it
sweep, stop, dump RAM with pmemsave and check it page by page, continue.
The same guest under Debian's QEMU must produce RAM the same checker
accepts (same pattern)."""

import ft_guest


if __name__ == "__main__":
    ft_guest.main_for(ft_guest.ferry_vm)
