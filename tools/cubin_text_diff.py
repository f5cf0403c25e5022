#!/usr/bin/env python3
"""Whether two cubins hold the same machine code, kernel by kernel (no GPU, no CUDA tools needed).

A refactor of the kernel sources that is meant to change nothing can be checked here, before any device time: build
the cubin before and after (same nvcc flags as cuda/build.py) and compare, byte for byte, each kernel's code
(`.text.<name>`), its launch attributes (`.nv.info.<name>`: parameters, registers, barriers) and its parameter bank
(`.nv.constant0.<name>`). Line info and other debug sections are ignored, so moved source lines do not count.

    python3 tools/cubin_text_diff.py before.cubin after.cubin      # exit 0: every kernel identical, 1: some differ
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

KERNEL_SECTIONS = (".text.", ".nv.info.", ".nv.constant0.")   # what makes a kernel the same kernel


def sections(path: Path) -> dict[str, bytes]:
    """Section name -> bytes of every per-kernel section of KERNEL_SECTIONS, read from the ELF64 section headers."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise SystemExit(f"cubin_text_diff: {path} is not a 64-bit ELF file (a cubin); a fatbin must be unpacked first")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = headers[shstrndx][4]

    def name(h) -> str:
        start = names_offset + h[0]
        return data[start:data.index(b"\0", start)].decode()

    return {name(h): data[h[4]:h[4] + h[5]] for h in headers if name(h).startswith(KERNEL_SECTIONS)}


def kernels(path: Path) -> dict[str, dict[str, bytes]]:
    """Kernel name -> {section prefix: bytes} for every kernel with code in the cubin."""
    found = sections(path)
    names = [n[len(".text."):] for n in found if n.startswith(".text.")]
    return {k: {pre: found.get(pre + k, b"") for pre in KERNEL_SECTIONS} for k in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    a, b = kernels(args.before), kernels(args.after)
    differ = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    only = sorted(a.keys() ^ b.keys())
    print(f"{len(a)} / {len(b)} kernels; identical {len(a.keys() & b.keys()) - len(differ)}, differing {len(differ)}, "
          f"in one file only {len(only)}")
    for k in differ:
        parts = [f"{pre.strip('.')} {len(a[k][pre])} -> {len(b[k][pre])} bytes" for pre in KERNEL_SECTIONS
                 if a[k][pre] != b[k][pre]]
        print(f"  differs: {k} ({', '.join(parts)})")
    for k in only:
        print(f"  only in {'before' if k in a else 'after'}: {k}")
    return 0 if not differ and not only else 1


if __name__ == "__main__":
    sys.exit(main())
