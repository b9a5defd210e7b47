"""Benchmark: pseudo-label mining rounds on the composite, scored against the hidden truth.

Needs a workspace with the composite ingested, features extracted and the teacher's answers
loaded (`mersemi teacher --backend replay --answers C/teacher/answers.jsonl`). Runs `mersemi
mine` with the given options, then, per round, the accepted clips per label and their precision
against answers/candidates_truth.csv (scoring only: nothing here feeds back into the run).

    python bench/mine_composite.py --workspace /tmp/ws-c0 --corpus /tmp/c0 -- --rounds 3 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("mine_args", nargs="*", help="options passed to `mersemi mine`")
    args = ap.parse_args()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "mine", "-w", str(args.workspace), "--json",
                           *args.mine_args], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    con = duckdb.connect(str(args.workspace / "catalog.duckdb"), read_only=True)
    try:
        decisions = con.execute(
            "SELECT d.round, d.decision, d.label, c.name FROM clip_decisions d JOIN clips c USING (clip_id) "
            "WHERE d.run_id = ?", [summary["run_id"]]).df()
    finally:
        con.close()
    truth = pd.read_csv(args.corpus / "answers" / "candidates_truth.csv").set_index("name")["discrete"]
    test = set(pd.read_csv(args.corpus / "answers" / "test_labels.csv")["name"])
    pool = len(truth) - len(test)
    print(f"`mersemi mine {' '.join(args.mine_args)}`: {wall:.0f} s, run {summary['run_id']}")
    print("\n| round | pool | accepted | precision | by label (precision) | CV wF1 | stopped |")
    print("|---|---|---|---|---|---|---|")
    total = 0
    for r in summary["rounds"]:
        acc = decisions[(decisions["round"] == r["round"]) & (decisions["decision"] == "accepted")]
        right = acc["label"].to_numpy() == truth.loc[acc["name"]].to_numpy()
        per = ", ".join(f"{lab} {n} ({right[acc['label'].to_numpy() == lab].mean():.2f})"
                        for lab, n in acc["label"].value_counts().items())
        total += len(acc)
        precision = right.mean() if len(acc) else float("nan")
        print(f"| {r['round']} | {r['pool']} | {len(acc)} | {precision:.3f} | "
              f"{per} | {r['cv_weighted_f1']:.3f} | {r['stopped'] or ''} |")
    unl = decisions[(decisions["decision"] == "accepted") & ~decisions["name"].isin(test)]
    print(f"\naccepted in all rounds: {total} (of them {len(unl)} from the {pool} unlabelled clips: "
          f"{len(unl) / pool:.1%} coverage; the rest are hidden test clips, which sit in the candidate pool)")


if __name__ == "__main__":
    main()
