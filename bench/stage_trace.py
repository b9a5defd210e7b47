"""Probe: where one stage's process holds its memory, step by step (to place a peak that
bench/scale_pool.py reports per stage). Runs a `mersemi` command in this process with the
named functions wrapped: each call prints, on return, the process's resident memory (VmRSS)
and the peak resident memory since the call began (VmHWM, reset on entry), in MB, and the
call's wall time; before each outermost traced call and at the end, the peak since the last
one returned ("between calls"). Forked fold workers are separate processes and are not counted
here.

    python bench/stage_trace.py --trace tasks.train.training_set,tasks.train.cross_validate,\\
        tasks.train.save_training,tasks.mine.mine_round,storage.records.record_round -- \\
        mine --workspace /tmp/scale-bench/pool-100000 --rounds 3 --epochs 10 --folds 3 --seeds 0 \\
        --workers 2 --pseudo-ratio 1

A function is wrapped in every loaded project module that holds it by name, and in every
Prefect task made from it (its `fn`). A nested traced call's peak counts in its caller's.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import time


def status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return {line.split(":")[0]: int(line.split()[1]) // 1024 for line in f
                if line.startswith(("VmRSS", "VmHWM"))}


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:       # 5: reset VmHWM to the current RSS
        f.write("5")


def between() -> None:
    """The peak outside traced calls: since the last one returned (or the start), to now."""
    now = status()
    print(f"[trace] (between calls) rss {now['VmRSS']} MB, peak {now['VmHWM']} MB", file=sys.stderr,
          flush=True)


def wrap(dotted: str, stack: list[int]) -> int:
    """Wrap `dotted` everywhere it is referenced (module attributes, Prefect tasks' `fn`);
    returns how many references were replaced."""
    module_name, name = dotted.rsplit(".", 1)
    original = getattr(importlib.import_module(module_name), name)

    @functools.wraps(original)
    def traced(*args, **kwargs):
        if stack:                           # the caller's peak so far, before the reset
            stack[-1] = max(stack[-1], status()["VmHWM"])
        else:                               # the peak since the last traced call (or the start)
            between()
        stack.append(0)                     # the peak of calls nested in this one
        reset_peak()
        before, started = status()["VmRSS"], time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            now, inner = status(), stack.pop()
            peak = max(now["VmHWM"], inner)
            if stack:
                stack[-1] = max(stack[-1], peak)
            print(f"[trace] {'  ' * len(stack)}{dotted}: {time.perf_counter() - started:.1f} s, "
                  f"rss {before} -> {now['VmRSS']} MB, peak {peak} MB", file=sys.stderr, flush=True)
            if not stack:
                reset_peak()

    replaced = 0
    for mod in list(sys.modules.values()):
        if not getattr(mod, "__name__", "").startswith(("flows", "tasks", "storage", "models")):
            continue
        for attr, value in list(vars(mod).items()):
            if value is original:
                setattr(mod, attr, traced)
                replaced += 1
            elif getattr(value, "fn", None) is original:         # a Prefect task of it
                value.fn = traced
                replaced += 1
    return replaced


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", required=True, help="dotted functions, comma-separated")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the mersemi command")
    args = ap.parse_args()
    from flows.cli import app  # every flow and task loaded

    stack: list[int] = []
    for dotted in args.trace.split(","):
        if not wrap(dotted.strip(), stack):
            raise SystemExit(f"{dotted}: nothing references it")

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    print(f"[trace] start: rss {status()['VmRSS']} MB", file=sys.stderr, flush=True)
    reset_peak()
    try:
        app(command, standalone_mode=False)
    finally:
        between()
        print(f"[trace] end: rss {status()['VmRSS']} MB", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
