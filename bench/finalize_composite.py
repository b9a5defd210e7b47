"""Benchmark: `mersemi finalize` on the composite, scored on the hidden test split.

Needs a workspace with a completed `mersemi mine` run (see bench/mine_composite.py). Runs
`mersemi finalize` with the given options, then scores on answers/test_labels.csv (the test
clips are hidden among the candidates): the submission (after re-ranking), the ensemble's own
labels (before re-ranking), and what each kept rule changed (scoring only: nothing here feeds
back into the run).

    python bench/finalize_composite.py --workspace /tmp/ws-c0 --corpus /tmp/c0 -- --seeds 0,1,2
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

from models.metrics import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("finalize_args", nargs="*", help="options passed to `mersemi finalize`")
    args = ap.parse_args()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "finalize", "-w", str(args.workspace), "--json",
                           *args.finalize_args], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"mersemi finalize failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    con = duckdb.connect(str(args.workspace / "catalog.duckdb"), read_only=True)
    try:
        final = con.execute("SELECT c.name, f.label, f.model_label FROM final_predictions f "
                            "JOIN clips c USING (clip_id) WHERE f.run_id = ?", [summary["run_id"]]).df()
        changes = con.execute("SELECT c.name, r.rule, r.before, r.after FROM rule_changes r "
                              "JOIN clips c USING (clip_id) WHERE r.run_id = ?", [summary["run_id"]]).df()
        labels = json.loads(con.execute("SELECT labels FROM datasets WHERE dataset = ?",
                                        [summary["dataset"]]).fetchone()[0])
    finally:
        con.close()
    truth = pd.read_csv(args.corpus / "answers" / "test_labels.csv").set_index("name")["discrete"]
    sub = pd.read_csv(summary["submission"]).set_index("name")["discrete"]
    model = final.set_index("name")["model_label"].reindex(truth.index).fillna(sub.reindex(truth.index))
    scored = {"submission (re-ranked)": sub.reindex(truth.index), "ensemble (before re-ranking)": model}
    print(f"`mersemi finalize {' '.join(args.finalize_args)}`: {wall:.0f} s, run {summary['run_id']}, "
          f"{summary['n_human']} human + {summary['n_pseudo']} pseudo-labels, "
          f"{summary['flagged_labels']} human labels flagged")
    print("\n| predictions | test weighted F1 | accuracy | macro F1 |")
    print("|---|---|---|---|")
    for name, pred in scored.items():
        m = evaluate(truth.tolist(), pred.tolist(), labels)
        print(f"| {name} | {m['weighted_f1']:.3f} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} |")
    print("\n| rule | kept | why | test clips changed | of them right before | right after |")
    print("|---|---|---|---|---|---|")
    test_changes = changes[changes["name"].isin(truth.index)]
    for r in summary["rules"]:
        c = test_changes[test_changes["rule"] == r["rule"]]
        t = truth.loc[c["name"]].to_numpy()
        print(f"| `{r['rule']}` | {'yes' if r['kept'] else 'no'} | {r['reason']} | {len(c)} | "
              f"{(c['before'].to_numpy() == t).sum()} | {(c['after'].to_numpy() == t).sum()} |")


if __name__ == "__main__":
    main()
