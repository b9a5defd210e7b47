"""The `mersemi audit` commands (registered on the app in flows/cli.py): read-only answers about
mining runs. This module parses arguments and prints; the logic is in storage/audit.py.

Every command opens the catalog read-only (`Catalog.reader()`, which waits out the writer's
short transactions), so it works while a pipeline runs, and takes `--json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli_common import JsonOpt, WorkspaceOpt, fail, out, run_guarded

audit_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Read-only audit of mining runs: rounds, accepted clips, one clip's history, "
                             "diffs, disagreements, review export, SQL console.")

RunOpt = Annotated[str | None, typer.Option("--run", help="mining run id [default: the newest]")]
TruthOpt = Annotated[Path | None, typer.Option(
    "--truth", help="hidden truth CSV (name,discrete; benchmark corpora): adds the precision of accepted "
                    "pseudo-labels")]
LimitOpt = Annotated[int | None, typer.Option(help="rows to show [default: all with --json, 100 as a table]")]


def reading(workspace: Path | None, fn):
    """fn(session, workspace) inside a read-only catalog session; user errors become exit codes."""
    from storage.workspace import Workspace

    def go():
        ws = Workspace(workspace)
        with ws.catalog.reader() as s:
            return fn(s, ws)

    return run_guarded(go)


def emit(payload) -> None:
    print(json.dumps(payload, sort_keys=True, default=str))


def votes_text(votes: dict | None) -> str:
    """moe/final=happy .91, teacher=sad .80: one voter per entry, compact."""
    return ", ".join(f"{v}={x.get('label')} {float(x.get('confidence') or 0):.2f}"
                     for v, x in sorted((votes or {}).items()))


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(title: str, columns: list[str], rows: list[list], right: tuple[str, ...] = ()) -> Table:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row in rows:
        t.add_row(*(fmt(x) for x in row))
    return t


def truth_mark(row: dict) -> str:
    if row["correct"] is None:
        return "-"
    return f"{row['truth']} {'ok' if row['correct'] else 'WRONG'}"


def run_line(run: dict) -> str:
    return (f"mining run {run['run_id']} ({run['status']}) on {run['dataset'] or '?'}: "
            f"{run['rounds']} round(s) recorded, started {run['started_at']}")


@audit_app.command()
def rounds(workspace: WorkspaceOpt = None, run: RunOpt = None, truth: TruthOpt = None,
           as_json: JsonOpt = False) -> None:
    """Per round: clips considered, accepted, rejected per label; reasons; validation metrics.

    With --truth, the precision of the accepted pseudo-labels per round and label.
    """
    from storage import audit

    known = run_guarded(audit.load_truth, truth) if truth else None
    report = reading(workspace, lambda s, ws: audit.rounds_report(s, run, known))
    if as_json:
        return emit(report)
    scored = known is not None
    out.print(run_line(report["run"]), highlight=False)
    extra = ["precision"] if scored else []
    cols = ["round", "pool", "considered", "accepted", "rejected", "CV wF1", *extra]
    out.print(table("rounds", cols + ["stopped"], [
        [r["round"], r["pool"], r["considered"], r["accepted"], r["rejected"], r["cv_weighted_f1"]]
        + ([r["precision"]] if scored else []) + [r["stopped"] or ""] for r in report["rounds"]],
        right=tuple(cols)))
    extra = ["judged", "precision"] if scored else []
    cols = ["round", "label", "considered", "accepted", "rejected", *extra]
    out.print(table("per label", cols, [
        [r["round"], x["label"] or "(none)", x["considered"], x["accepted"], x["rejected"]]
        + ([x["judged"], x["precision"]] if scored else []) for r in report["rounds"] for x in r["labels"]],
        right=tuple(cols[2:])))
    out.print(table("reasons", ["round", "decision", "kind", "clips"], [
        [r["round"], x["decision"], x["kind"], x["n"]] for r in report["rounds"] for x in r["reasons"]],
        right=("clips",)))
    total = report["total"]
    out.print(f"accepted in all: {total['accepted']}"
              + (f", precision {fmt(total['precision'])} on {total['judged']} with truth" if scored else ""),
              highlight=False)


@audit_app.command()
def accepted(workspace: WorkspaceOpt = None, run: RunOpt = None,
             round_: Annotated[int | None, typer.Option("--round", help="round [default: all]")] = None,
             label: Annotated[str | None, typer.Option(help="only this label")] = None,
             truth: TruthOpt = None, limit: LimitOpt = None,
             reasoning: Annotated[bool, typer.Option(
                 "--reasoning", help="add the teacher's answer (model, scores, reasoning)")] = False,
             as_json: JsonOpt = False) -> None:
    """The accepted clips of a run and round: votes, teacher's answer, confidence, reason."""
    from storage import audit

    known = run_guarded(audit.load_truth, truth) if truth else None
    # Only the clips shown are read: a round of a large pool accepts tens of thousands.
    shown_at_most = limit if limit is not None else (None if as_json else 100)
    found, shown, total = reading(workspace, lambda s, ws: audit.accepted_clips(
        s, run, round_, label, known, reasoning, limit=shown_at_most))
    if as_json:
        return emit({"run": found, "total": total, "clips": audit.records(shown)})
    out.print(run_line(found), highlight=False)
    scored = known is not None
    cols = ["round", "clip", "label", "conf", "teacher", "votes", "reason", *(["truth"] if scored else [])]
    out.print(table(f"accepted clips ({total})", cols, [
        [r["round"], r["name"] or r["clip_id"], r["label"], r["confidence"],
         f"{r['teacher_label'] or '-'} {fmt(r['teacher_confidence'], 2)}", votes_text(r["votes"]),
         r["reason"] + (f" | teacher: {r['teacher_reasoning']}" if r.get("teacher_reasoning") else "")]
        + ([truth_mark(r)] if scored else [])
        for r in audit.records(shown)], right=("round", "conf")))
    if len(shown) < total:
        out.print(f"{total - len(shown)} more: --limit or --json for all", highlight=False)


@audit_app.command()
def clip(name: Annotated[str, typer.Argument(help="a clip's name or clip_id")],
         workspace: WorkspaceOpt = None,
         run: Annotated[str | None, typer.Option("--run", help="only this mining run's decisions")] = None,
         as_json: JsonOpt = False) -> None:
    """One clip's whole history: media, features, every vote and decision, the teacher's reasoning.

    NAME is the clip's name or its clip_id.
    """
    from storage import audit

    history = reading(workspace, lambda s, ws: audit.clip_history(s, ws.artifacts, name, run))
    if as_json:
        return emit(history)
    show_clip(history)


def show_clip(h: dict) -> None:
    c = h["clip"]
    media = ["clip_id", "dataset", "split", "label", "status", "reason", "video_path", "audio_path", "text",
             "duration_s", "has_video", "has_audio", "has_text", "video_sha256", "audio_sha256",
             "first_seen_run", "last_changed_run"]
    out.print(table(f"clip {c['name']}", ["field", "value"], [[k, c.get(k)] for k in media]))
    out.print(table("features (newest set per extractor)", ["extractor", "status", "reason", "dim", "run"],
                    [[f["extractor"], f["status"], f["reason"], f["dim"], f["run_id"]]
                     for f in h["features"]]))
    out.print(table("mining decisions", ["run", "round", "decision", "label", "conf", "votes", "reason"],
                    [[d["run_id"], d["round"], d["decision"], d["label"], d["confidence"],
                      votes_text(d["votes"]), d["reason"]] for d in h["decisions"]], right=("round", "conf")))
    out.print(table("teacher", ["run", "question", "outcome", "model", "label", "reasoning"],
                    [[t["run_id"], t["question"], t["outcome"], t["model"], t["label"],
                      t["reasoning"] or t["raw_text"] or t["error"]] for t in h["teacher"]]))
    if h["final"]:
        out.print(table("final labels", ["run", "label", "conf", "model label", "rules"],
                        [[f["run_id"], f["label"], f["confidence"], f["model_label"], f["rules"]]
                         for f in h["final"]]))
    for ch in h["rule_changes"]:
        out.print(f"rule {ch['rule']} (run {ch['run_id']}): {ch['before']} -> {ch['after']}: {ch['detail']}",
                  highlight=False)
    for f in h["label_flags"]:
        out.print(f"label flag (run {f['run_id']}): human {f['label']}, {f['n_sources']} sources say "
                  f"{f['alternative']} ({f['action']})", highlight=False)


@audit_app.command()
def diff(workspace: WorkspaceOpt = None, run: RunOpt = None,
         rounds_: Annotated[list[int], typer.Option("--round", help="two rounds: --round A --round B")] = (),
         run_b: Annotated[str | None, typer.Option("--run-b", help="round B's run [default: --run]")] = None,
         as_json: JsonOpt = False) -> None:
    """Clips that entered, left or changed label between round A and round B.

    A clip's state at a round is its latest decision up to that round (accepted clips leave
    the pool, so they stay accepted).
    """
    from storage import audit

    if len(rounds_) != 2:
        fail(f"diff needs two rounds (--round A --round B), got {len(rounds_)}", 2)
    a, b = rounds_
    first, second, frame = reading(workspace, lambda s, ws: audit.round_diff(s, a, b, run, run_b))
    counts = {k: int((frame["change"] == k).sum()) for k in ("entered", "left", "changed")}
    if as_json:
        return emit({"a": {"run": first["run_id"], "round": a}, "b": {"run": second["run_id"], "round": b},
                     "counts": counts, "changes": audit.records(frame)})
    out.print(f"{first['run_id']} round {a} -> {second['run_id']} round {b}: "
              + ", ".join(f"{n} {k}" for k, n in counts.items()), highlight=False)
    out.print(table("changes", ["change", "clip", "label A", "label B", "decision A", "decision B"],
                    [[r["change"], r["name"] or r["clip_id"], r["label_a"], r["label_b"], r["decision_a"],
                      r["decision_b"]] for r in audit.records(frame)]))


@audit_app.command()
def disagreements(workspace: WorkspaceOpt = None, run: RunOpt = None,
                  round_: Annotated[int | None, typer.Option(
                      "--round", help="this round's decisions [default: each clip's latest]")] = None,
                  limit: LimitOpt = None, as_json: JsonOpt = False) -> None:
    """Clips where the teacher and the models disagree, ranked for human review."""
    from storage import audit

    found, frame = reading(workspace, lambda s, ws: audit.disagreements(s, run, round_))
    shown = frame.head(limit if limit is not None else (len(frame) if as_json else 100))
    if as_json:
        return emit({"run": found, "total": len(frame), "clips": audit.records(shown)})
    out.print(run_line(found), highlight=False)
    out.print(table(f"disagreements ({len(frame)}), most worth a human label first",
                    ["rank", "clip", "round", "decision", "label", "teacher", "models", "score", "reasoning"],
                    [[r["rank"], r["name"] or r["clip_id"], r["round"], r["decision"], r["label"],
                      f"{r['teacher_label']} {r['teacher_confidence']:.2f}",
                      f"{r['model_label']} ({r['model_votes']})", r["score"], r["teacher_reasoning"]]
                     for r in audit.records(shown)], right=("rank", "round", "score")))
    if len(shown) < len(frame):
        out.print(f"{len(frame) - len(shown)} more: --limit or --json for all", highlight=False)


@audit_app.command()
def export(out_file: Annotated[Path, typer.Option("--out", help="file to write")],
           workspace: WorkspaceOpt = None, run: RunOpt = None,
           format_: Annotated[str, typer.Option("--format", help="csv or labelstudio")] = "labelstudio",
           round_: Annotated[int | None, typer.Option("--round", help="this round's decisions")] = None,
           limit: Annotated[int | None, typer.Option(help="the N highest-ranked only")] = None,
           media_url: Annotated[str | None, typer.Option(
               help="prefix for the video, joined with its path under the dataset folder (Label Studio "
                    "local files: '/data/local-files/?d=') [default: the file path]")] = None,
           config: Annotated[Path | None, typer.Option(
               help="also write the matching Label Studio labeling config (XML) here")] = None,
           as_json: JsonOpt = False) -> None:
    """Write the ranked disagreements as review tasks: CSV, or Label Studio JSON.

    Label Studio tasks carry every vote as a prediction; --config writes the labeling config
    they match.
    """
    from storage import audit

    if format_ not in ("csv", "labelstudio"):
        fail(f"--format must be csv or labelstudio, not {format_!r}", 2)

    def build(s, ws):
        found, frame = audit.disagreements(s, run, round_, limit)
        return found, frame, audit.dataset_labels(s, found["dataset"])

    found, frame, labels = reading(workspace, build)
    if format_ == "csv":
        audit.review_rows(frame, media_url).to_csv(out_file, index=False)
    else:
        out_file.write_text(json.dumps(audit.review_tasks(frame, media_url), indent=1, ensure_ascii=False),
                            "utf-8")
    if config:
        config.write_text(audit.labelstudio_config(labels), "utf-8")
    summary = {"run_id": found["run_id"], "format": format_, "tasks": len(frame), "out": str(out_file),
               "config": str(config) if config else None}
    if as_json:
        return emit(summary)
    out.print(f"wrote {len(frame)} review task(s) ({format_}) to {out_file}"
              + (f"; labeling config: {config}" if config else ""), highlight=False)


def parse_params(items: list[str]) -> dict:
    """--param name=value: an integer or a number when it reads as one, else text."""
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"--param takes name=value, got {item!r}")
        for cast in (int, float):
            try:
                params[name] = cast(value)
                break
            except ValueError:
                continue
        else:
            params[name] = value
    return params


@audit_app.command()
def sql(query: Annotated[str, typer.Argument(help="one read-only statement (SELECT, WITH, EXPLAIN, "
                                                   "DESCRIBE, SHOW, SUMMARIZE)")] = "SHOW TABLES",
        workspace: WorkspaceOpt = None,
        param: Annotated[list[str], typer.Option(help="bound parameter name=value, used as $name")] = (),
        max_rows: Annotated[int, typer.Option(help="rows to return at most")] = 1000,
        views: Annotated[bool, typer.Option("--views", help="list the artifact views and exit")] = False,
        as_json: JsonOpt = False) -> None:
    """A read-only SQL console over the catalog's tables and a view per Parquet artifact."""
    from storage import audit

    params = run_guarded(parse_params, list(param))
    if views:
        found = reading(workspace, lambda s, ws: audit.artifact_views(s, ws.artifacts))
        return emit(found) if as_json else out.print(table(
            "artifact views (newest artifact of each stage/name)", ["view", "artifact", "rows"],
            [[v["view"], v["artifact_id"], v["rows"]] for v in found], right=("rows",)))
    frame, truncated = reading(workspace,
                               lambda s, ws: audit.run_sql(s, ws.artifacts, query, params, max_rows))
    if as_json:
        return emit({"columns": list(frame.columns), "rows": audit.records(frame), "truncated": truncated})
    out.print(table(f"{len(frame)} row(s)" + (" (truncated: --max-rows)" if truncated else ""),
                    [str(c) for c in frame.columns], frame.astype(object).values.tolist()))
