"""The machine a benchmark ran on, as one line for its JSON and its printout (the benchmarks
import it as ``from machine import describe``: they run as scripts from this folder)."""

import contextlib
import os
import platform


def describe() -> str:
    """CPU model, core count, and the versions that matter, e.g.
    ``AMD EPYC 9R14, 2 cpus, Python 3.11.7, torch 2.13.0+cpu``."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = [f"Python {platform.python_version()}"]
    for module in ("torch", "ray"):
        with contextlib.suppress(ImportError):
            versions.append(f"{module} {__import__(module).__version__}")
    return f"{name}, {os.cpu_count()} cpus, " + ", ".join(versions)
