#!/usr/bin/env python3
"""What a component is made of, read from its binary's top-level sections:
its core modules (and their sizes), its core instance definitions (each
core module's instantiation, and the bags of imports built for them), its canonical functions (lifts, lowers, resource
intrinsics), imports, aliases and types. For the question of what an
instance costs: each core module is one more core instance to set up, and
a Rust plugin's two small ones are wit-component's shim and fixup (the
indirect table that lets the main module's imports use its own memory).

Usage: python3 tests/bench/anatomy.py FILE.wasm ...   (reads files only)
"""

import sys

SECTIONS = {2: "core instance definitions", 3: "core types", 5: "instances", 6: "aliases", 7: "types",
            8: "canonical functions", 10: "imports", 11: "exports"}


def leb128(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def anatomy(data):
    """Counts of a component's top-level sections' entries."""
    if data[:4] != b"\0asm" or data[6] != 1:
        raise ValueError("not a component")
    at, modules, nested, counts = 8, [], 0, {}
    while at < len(data):
        section = data[at]
        size, at = leb128(data, at + 1)
        body = data[at:at + size]
        at += size
        if section == 1:
            modules.append(size)
        elif section == 4:
            nested += 1
        elif section in SECTIONS:
            count, _ = leb128(body, 0)
            counts[SECTIONS[section]] = counts.get(SECTIONS[section], 0) + count
    return modules, nested, counts


def main():
    for path in sys.argv[1:]:
        with open(path, "rb") as file:
            data = file.read()
        modules, nested, counts = anatomy(data)
        sizes = ", ".join(f"{size / 1024:.0f} KiB" for size in modules)
        print(f"{path}: {len(data) / 1024:.0f} KiB; {len(modules)} core modules ({sizes}); "
              f"{nested} nested components; "
              + "; ".join(f"{n} {name}" for name, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
