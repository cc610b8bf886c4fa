"""The size summary printed after packing."""

import collections

from .archive import CODECACHE_MEMBER, LIBS_PREFIX
from .collect import SITE_PREFIX, STDLIB_PREFIX

_GROUPS = (("stdlib", STDLIB_PREFIX), ("site-packages", SITE_PREFIX),
           ("bundled libs", LIBS_PREFIX))
_TOP_DISTRIBUTIONS = 8


def format_size(size):
    """1536 -> "1.5 KiB"."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def format_summary(output, result):
    """Sizes in app.bin: host, stdlib, site-packages, bundled libs, biggest distributions."""
    written = result.written
    files = [e for e in written.entries if not e.is_dir()]
    lines = [f"appbin-pack: wrote {output} ({format_size(written.total_size)})",
             _row("host", "", written.host_size)]
    grouped = 0
    for label, prefix in _GROUPS:
        group = [e for e in files if e.filename.startswith(prefix)]
        size = sum(e.compress_size for e in group)
        grouped += size
        lines.append(_row(label, f"{len(group)} files", size))
    cache = [e for e in files if e.filename == CODECACHE_MEMBER]
    if cache:
        grouped += cache[0].compress_size
        lines.append(_row("code cache", f"{result.code_cache.entries} codes",
                          cache[0].compress_size))
    overhead = written.total_size - written.host_size - grouped
    lines.append(_row("manifest, zip headers", "", overhead))
    lines.append(_row("total", f"{len(files)} files", written.total_size))
    lines += _distribution_lines(files, result.owners)
    if result.dropped:
        lines.append("left out: " + ", ".join(result.dropped))
    return "\n".join(lines)


def _row(label, count, size):
    return f"  {label:<24} {count:>11} {format_size(size):>11}"


def _distribution_lines(files, owners):
    sizes = collections.Counter()
    for entry in files:
        owner = owners.get(entry.filename)
        if owner:
            sizes[owner] += entry.compress_size
    if not sizes:
        return []
    top = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:_TOP_DISTRIBUTIONS]
    return ["biggest distributions:"] + [_row(name, "", size) for name, size in top]
