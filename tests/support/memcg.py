"""A memory cgroup of our own: the honest stand-in for a container's memory limit.

A Kubernetes memory limit is a cgroup memory limit: when the container's usage (anonymous memory
plus page cache it cannot reclaim) reaches it, the kernel reclaims, and if that fails it
OOM-kills a process in the cgroup. ``ulimit -v`` is not the same thing (it caps address space,
which Python over-reserves), so the memory-limit test puts the operator in a real cgroup.

cgroup v1 (this project's machines and CI): a child of the test process's own memory cgroup,
so the machine's limits still apply above it. Charges made before a process is moved stay where
they were (newer kernels refuse ``memory.move_charge_at_immigrate``), so move a process right
after it starts, before it has allocated much. cgroup v2: a child of the root cgroup when the root
delegates the memory controller (v2 forbids processes in an inner cgroup with controllers, so a
child of our own cgroup would not work). Anything else: :func:`unavailable_reason` says why.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


def _own_v1_path() -> str | None:
    """This process's cgroup in the v1 memory hierarchy (``/`` at the root), if any."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return None


def _v2_has_memory() -> bool:
    controls = V2_ROOT / "cgroup.subtree_control"
    return controls.exists() and "memory" in controls.read_text().split()


def unavailable_reason() -> str | None:
    """Why a memory cgroup cannot be made here (``None`` when it can)."""
    if os.geteuid() != 0:
        return "needs root to create a memory cgroup"
    own = _own_v1_path()
    if own is not None and V1_ROOT.is_dir():
        parent = V1_ROOT / own.lstrip("/")
        if not os.access(parent, os.W_OK) or not (parent / "memory.limit_in_bytes").exists():
            return f"the memory cgroup {parent} is not writable"
        return None
    if _v2_has_memory():
        return None
    return "no writable cgroup memory controller (neither v1 nor a v2 root delegating memory)"


class MemoryCgroup:
    """A uniquely named memory cgroup with a hard limit; :meth:`remove` deletes it."""

    def __init__(self, limit_bytes: int, prefix: str = "nsbaseline-test") -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        own = _own_v1_path()
        self.v1 = own is not None and V1_ROOT.is_dir()
        parent = V1_ROOT / own.lstrip("/") if self.v1 and own is not None else V2_ROOT
        self.path = parent / name
        self.limit_bytes = limit_bytes
        self.path.mkdir()
        try:
            if self.v1:
                (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                with contextlib.suppress(OSError):  # no swapping past the limit either
                    (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
                # Pages charged before a move follow the process (bits 0, 1) where the kernel
                # still supports it (deprecated in newer kernels, which refuse the write).
                with contextlib.suppress(OSError):
                    (self.path / "memory.move_charge_at_immigrate").write_text("3")
            else:
                (self.path / "memory.max").write_text(str(limit_bytes))
                with contextlib.suppress(OSError):  # absent without swap accounting
                    (self.path / "memory.swap.max").write_text("0")
        except OSError:
            self.path.rmdir()
            raise

    def add(self, pid: int) -> None:
        """Move a process (all its threads) into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def usage_bytes(self) -> int:
        """What the kernel charges to the cgroup now (anonymous memory and page cache)."""
        return int(self._read("memory.usage_in_bytes" if self.v1 else "memory.current"))

    def peak_bytes(self) -> int:
        """The highest charge since creation or the last :meth:`reset_peak`."""
        if self.v1:
            return int(self._read("memory.max_usage_in_bytes"))
        peak = self.path / "memory.peak"  # kernel >= 5.19
        return int(peak.read_text()) if peak.exists() else self.usage_bytes()

    def reset_peak(self) -> None:
        """Start a new peak measurement (v1 only; on v2 the peak stays cumulative)."""
        if self.v1:
            (self.path / "memory.max_usage_in_bytes").write_text("0")

    def oom_kills(self) -> int:
        """Processes the kernel OOM-killed in this cgroup."""
        text = self._read("memory.oom_control" if self.v1 else "memory.events")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def limit_hits(self) -> int:
        """How often usage reached the limit and the kernel had to reclaim (v1 ``failcnt``)."""
        if self.v1:
            return int(self._read("memory.failcnt"))
        for line in self._read("memory.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
        return 0

    def procs(self) -> list[int]:
        return [int(p) for p in self._read("cgroup.procs").split()]

    def remove(self, timeout: float = 10.0) -> None:
        """Delete the cgroup once its processes are gone (the caller stops them first)."""
        deadline = time.monotonic() + timeout
        while self.path.exists():
            try:
                self.path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            else:
                return
        with contextlib.suppress(FileNotFoundError):
            self.path.rmdir()
