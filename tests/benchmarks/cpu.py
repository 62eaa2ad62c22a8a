"""CPU time of a whole process tree, read from /proc, to say what a server spends per answer:
sample before and after a load cell, and the difference, per process name, is the CPU it
used meanwhile (all threads, user and system).

    before = tree_cpu(pid); ...load...; used = cpu_used(before, tree_cpu(pid))   # {name: s}
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(process name, parent pid, CPU seconds) of ``pid``; None once it has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is the state (stat's 3rd field): utime and stime are its 14th and 15th
    return _name(comm, cmdline), int(fields[1]), (int(fields[11]) + int(fields[12])) * TICK_S


def _name(comm: str, cmdline: bytes) -> str:
    """A stable label: Ray's workers by the title Ray gives them (``ray::ServeReplica:...``)."""
    first = cmdline.split(b"\0", 1)[0].decode(errors="replace")
    if first.startswith("ray::"):
        kind = first.split(":")[2] if first.count(":") >= 2 else first
        return "ray::" + kind.split(".")[0].split(" ")[0]
    return comm


def tree_cpu(root: int) -> dict[int, tuple[str, float]]:
    """{pid: (name, CPU seconds)} for ``root`` and every process below it."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (_, parent, _) in stats.items():
        children[parent].append(pid)
    tree, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in stats:
            name, _, seconds = stats[pid]
            tree[pid] = (name, seconds)
        stack.extend(children.get(pid, ()))
    return tree


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each process name used between two samples (a process born meanwhile
    counts from zero; one that exited meanwhile is lost, so keep the tree alive)."""
    used: dict[str, float] = defaultdict(float)
    for pid, (name, seconds) in after.items():
        used[name] += seconds - before.get(pid, (name, 0.0))[1]
    return dict(used)
