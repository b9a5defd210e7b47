"""The `mersemi` command line. Every command works on a workspace and takes --json.

Exit codes: 0 done; 1 a check failed; 2 unusable input (layout, parameters);
3 the workspace is busy or its catalog unusable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.audit_cli import audit_app
from flows.cli_common import (
    DaskAddressOpt,
    JsonOpt,
    PseudoRatioOpt,
    TaskRunnerOpt,
    WorkspaceOpt,
    app,
    out,
    pseudo_ratio_arg,
    run_guarded,
)
from flows.report_cli import report
from flows.teacher_cli import show_teacher, teacher

app.command()(teacher)
app.command()(report)
app.add_typer(audit_app, name="audit", help="Read-only audit of mining runs (works while a pipeline runs).")


def show_ingest(summary: dict) -> None:
    table = Table(title=f"ingest: {summary['dataset']} ({summary['layout']} layout)")
    for col in ("clips", "ok", "degraded", "errors", *summary["by_split"]):
        table.add_column(col, justify="right")
    table.add_row(*(str(summary[k]) for k in ("registered", "ok", "degraded", "errors")),
                  *(str(v) for v in summary["by_split"].values()))
    out.print(table)
    if summary["by_reason"]:
        reasons = Table(title="clips that are not ok, by reason")
        reasons.add_column("reason")
        reasons.add_column("clips", justify="right")
        for reason, n in summary["by_reason"].items():
            reasons.add_row(reason, str(n))
        out.print(reasons)
    for warning in summary["warnings"]:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if summary["changed"]:
        out.print(f"registry: {summary['registry']} (run {summary['run_id']})", highlight=False)
    else:
        out.print(f"unchanged: the current registry stands ({summary['registry']})",
                  highlight=False)


@app.command()
def ingest(
    dataset_dir: Annotated[Path, typer.Argument(
        help="MER2025-layout folder, folder of videos, or manifest CSV")],
    workspace: WorkspaceOpt = None,
    labels: Annotated[str | None, typer.Option(
        help="label set, comma-separated [default: MER2025's six]")] = None,
    layout: Annotated[str | None, typer.Option(help="mer2025, manifest or folder")] = None,
    text_column: Annotated[str, typer.Option(help="subtitle column: english or chinese")] = "english",
    name: Annotated[str | None, typer.Option(help="dataset name [default: folder name]")] = None,
    jobs: Annotated[int, typer.Option(help="processes probing media")] = 2,
    as_json: JsonOpt = False,
) -> None:
    """Register every clip of a dataset: media probed and hashed, bad clips with a reason."""
    from flows.ingest import ingest_flow
    from flows.params import IngestParams
    from storage.workspace import resolve

    def go():
        params = IngestParams(dataset_dir=dataset_dir, workspace=resolve(workspace),
                              layout=layout, text_column=text_column, dataset=name, jobs=jobs,
                              **({"labels": labels} if labels else {}))
        return ingest_flow(params)

    summary = run_guarded(go)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        show_ingest(summary)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="where the synthetic corpus goes")] = Path(
        "demo-corpus"),
    workspace: WorkspaceOpt = None,
    workers: Annotated[int, typer.Option(help="feature worker processes")] = 2,
    as_json: JsonOpt = False,
) -> None:
    """Generate a small SYNTHETIC corpus and run the whole pipeline on it through Prefect."""
    from flows.config import load_config
    from flows.pipeline import pipeline_flow
    from storage.synthetic import make_corpus
    from storage.workspace import resolve

    notice = ("This demo runs on a SYNTHETIC corpus (cartoon faces, synthetic voices, template "
              "subtitles, a simulated teacher): not real data, and its numbers say nothing "
              "about real clips.")
    if not as_json:
        out.print(f"[bold]{notice}[/]")
    corpus = make_corpus(out_dir)
    ws = resolve(workspace)
    # Few labelled clips here: 3 folds, one seed, short training; and a model that weak cannot
    # vouch for 95 % precise pseudo-labels, so the demo accepts at an estimated 85 %.
    small = {"folds": 3, "seeds": [0], "epochs": 40}
    answers = str(out_dir / "teacher" / "answers.jsonl")
    params = run_guarded(load_config, None, [], dataset_dir=out_dir, workspace=ws,
                         features={"workers": workers}, teacher={"backend": "replay", "answers": answers},
                         mine={"rounds": 2, "target_precision": 0.85, **small}, finalize=small)
    summary = run_guarded(pipeline_flow, params)
    summary |= {"synthetic": True, "notice": notice, "corpus": str(out_dir.resolve()),
                "corpus_counts": corpus}
    if as_json:
        print(json.dumps(summary, sort_keys=True, default=str))
        return
    out.print(f"generated {corpus['clips']} synthetic clips in {summary['corpus']} "
              f"({corpus['train']} labelled, {corpus['candidate']} candidates)", highlight=False)
    show_pipeline(summary)
    out.print(f"workspace: {ws} (try `mersemi status -w {ws}`)", highlight=False)


def show_pipeline(summary: dict) -> None:
    for stage, show in (("ingest", show_ingest), ("features", show_features), ("teacher", show_teacher)):
        if stage in summary:
            show(summary[stage])
    if "mine" in summary:
        m = summary["mine"]
        out.print(f"mine (run {m['run_id']}): accepted per round {m['accepted_per_round']}"
                  + (f", stopped: {m['stopped']}" if m["stopped"] else ""), highlight=False)
    if "finalize" in summary:
        f = summary["finalize"]
        out.print(f"finalize (run {f['run_id']}): {f['n_pseudo']} pseudo-labels, rules kept: "
                  f"{', '.join(r['rule'] for r in f['rules'] if r['kept']) or 'none'}", highlight=False)
        out.print(f"submission ({f['candidates']} candidates): {f['submission']}", highlight=False)
    if "report" in summary:
        out.print(f"run report: {summary['report']['path']} (or `mersemi audit rounds`)", highlight=False)


@app.command()
def run(
    dataset_dir: Annotated[Path | None, typer.Argument(help="dataset folder or manifest CSV")] = None,
    workspace: WorkspaceOpt = None,
    config: Annotated[Path | None, typer.Option(help="pipeline configuration (YAML)")] = None,
    setting: Annotated[list[str] | None, typer.Option(
        "--set", help="SECTION.KEY=VALUE override, e.g. mine.rounds=2 (repeatable)")] = None,
    stages: Annotated[str | None, typer.Option(help="stages to run, comma-separated")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="print the validated "
                                               "configuration and exit")] = False,
    task_runner: Annotated[str | None, typer.Option(
        help="where feature shards run: processes or dask [default: the config's, else processes]")] = None,
    dask_address: DaskAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the pipeline (ingest, features, teacher, mine, finalize) as one Prefect flow."""
    from flows.config import dump_config, load_config
    from flows.pipeline import pipeline_flow

    # --task-runner and --dask-address are short for --set features.task_runner=... (given last).
    runner = [f"features.task_runner={task_runner}"] if task_runner else []
    runner += [f"features.dask_address={dask_address}"] if dask_address else []
    params = run_guarded(load_config, config, [*(setting or []), *runner], dataset_dir=dataset_dir,
                         workspace=workspace, stages=csv_tuple(stages) if stages else None)
    if print_config:
        print(dump_config(params), end="")
        return
    summary = run_guarded(pipeline_flow, params)
    if as_json:
        print(json.dumps(summary, sort_keys=True, default=str))
        return
    show_pipeline(summary)


def parse_settings(settings: list[str]) -> dict[str, dict]:
    """`extractor.param=value` pairs (values read as YAML scalars) into per-extractor dicts."""
    import yaml

    out: dict[str, dict] = {}
    for item in settings:
        target, sep, value = item.partition("=")
        name, dot, param = target.partition(".")
        if not sep or not dot or not name or not param:
            raise ValueError(f"--set {item!r}: expected EXTRACTOR.PARAM=VALUE")
        out.setdefault(name, {})[param] = yaml.safe_load(value) if value else None
    return out


def show_features(summary: dict) -> None:
    table = Table(title=f"features: {summary['dataset']} (run {summary['run_id']})")
    for col in ("extractor", "clips", "ok", "missing", "error", "cached", "extracted", "clips/s", "dim"):
        table.add_column(col, justify="left" if col == "extractor" else "right")
    for name, e in summary["extractors"].items():
        table.add_row(name, *(str(e[k]) for k in ("clips", "ok", "missing", "error", "cached", "extracted")),
                      str(e["clips_per_s"] or "-"), str(e["dim"]))
    out.print(table)


@app.command()
def features(
    workspace: WorkspaceOpt = None,
    dataset: Annotated[str | None, typer.Option(help="dataset [default: the only one]")] = None,
    extractors: Annotated[str | None, typer.Option(
        help="comma-separated extractors [default: the default set]")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="EXTRACTOR.PARAM=VALUE, e.g. visual_face.encoder=fer:model.tflite")] = None,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
    shard_size: Annotated[int, typer.Option(help="clips per shard")] = 200,
    task_runner: TaskRunnerOpt = "processes",
    dask_address: DaskAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Extract features per modality for every usable clip (sharded, cached, resumable)."""
    from flows.features import features_flow_for
    from flows.params import FeaturesParams
    from storage.workspace import resolve

    def go():
        chosen = {"extractors": tuple(extractors.split(","))} if extractors else {}
        params = FeaturesParams(workspace=resolve(workspace), dataset=dataset, workers=workers,
                                shard_size=shard_size, extractor_params=parse_settings(settings or []),
                                task_runner=task_runner, dask_address=dask_address, **chosen)
        return features_flow_for(params)(params)

    summary = run_guarded(go)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        show_features(summary)


def csv_tuple(value: str | None, cast=str) -> tuple:
    return tuple(cast(v.strip()) for v in value.split(",") if v.strip()) if value else ()


def show_train(summary: dict) -> None:
    table = Table(title=f"train: {summary['dataset']} (run {summary['run_id']}), {summary['n_train']} "
                        f"labelled clips, {summary['models']} fold models")
    for col in ("fusion", "head", "CV weighted F1"):
        table.add_column(col)
    for fusion, heads in summary["cv_weighted_f1"].items():
        for head, f1 in heads.items():
            table.add_row(fusion, head, f"{f1:.3f}")
    out.print(table)


@app.command()
def train(
    workspace: WorkspaceOpt = None,
    dataset: Annotated[str | None, typer.Option(help="dataset [default: the only one]")] = None,
    fusion: Annotated[str, typer.Option(
        help="fusion heads, comma-separated; the first predicts")] = "moe,attention",
    experts: Annotated[str | None, typer.Option(help="experts [default: every available one]")] = None,
    folds: Annotated[int, typer.Option(help="cross-validation folds")] = 5,
    seeds: Annotated[str, typer.Option(help="seeds, comma-separated")] = "0,1,2",
    epochs: Annotated[int, typer.Option(help="most epochs per fold (early stopping)")] = 80,
    class_weighted: Annotated[bool, typer.Option(help="class-weighted loss")] = False,
    workers: Annotated[int, typer.Option(
        help="processes fitting fold models side by side (same results)")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Train the fusion baseline with k-fold cross-validation; report CV weighted F1 per head."""
    from flows.params import TrainParams
    from flows.train import train_flow
    from storage.workspace import resolve

    def go():
        return train_flow(TrainParams(
            workspace=resolve(workspace), dataset=dataset, fusions=csv_tuple(fusion),
            experts=csv_tuple(experts), folds=folds, seeds=csv_tuple(seeds, int), epochs=epochs,
            class_weighted=class_weighted, workers=workers))

    summary = run_guarded(go)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        show_train(summary)


@app.command()
def predict(
    workspace: WorkspaceOpt = None,
    dataset: Annotated[str | None, typer.Option(help="dataset [default: the only one]")] = None,
    train_run: Annotated[str | None, typer.Option(help="training run [default: the newest]")] = None,
    head: Annotated[str, typer.Option(help="final, fused or expert:<name>")] = "final",
    out_file: Annotated[Path | None, typer.Option("--out", help="also write the submission here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict every candidate clip with a training run's fold models; write a MER2025 submission."""
    from flows.params import PredictParams
    from flows.train import predict_flow
    from storage.workspace import resolve

    def go():
        return predict_flow(PredictParams(workspace=resolve(workspace), dataset=dataset, train_run=train_run,
                                          head=head, out=out_file))

    summary = run_guarded(go)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    out.print(f"predicted {summary['predicted']} of {summary['candidates']} candidates with "
              f"{summary['head']} ({summary['models']} fold models of {summary['train_run']}); "
              f"{summary['fallback']} fell back to {summary['fallback_label']!r}", highlight=False)
    out.print(f"submission: {summary['submission']}", highlight=False)


@app.command()
def mine(
    workspace: WorkspaceOpt = None,
    dataset: Annotated[str | None, typer.Option(help="dataset [default: the only one]")] = None,
    rounds: Annotated[int, typer.Option(help="most rounds")] = 3,
    policy: Annotated[str, typer.Option(help="consensus, vote or both")] = "both",
    quorum: Annotated[int, typer.Option(help="voters that must agree")] = 3,
    selection: Annotated[str, typer.Option(
        help="estimated (largest set whose estimated precision reaches the target) or threshold "
             "(per-label out-of-fold confidence thresholds)")] = "estimated",
    target_precision: Annotated[float, typer.Option(
        help="precision the accepted pseudo-labels must reach")] = 0.95,
    weighting: Annotated[str, typer.Option(help="pseudo-label weight: hard or confidence")] = "hard",
    folds: Annotated[int, typer.Option(help="cross-validation folds")] = 5,
    seeds: Annotated[str, typer.Option(help="seeds, comma-separated")] = "0,1,2",
    epochs: Annotated[int, typer.Option(help="most epochs per fold")] = 80,
    workers: Annotated[int, typer.Option(
        help="processes fitting fold models side by side (same results)")] = 1,
    pseudo_ratio: PseudoRatioOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Multi-round voting data mining: accept pseudo-labels where the voters agree, retrain, repeat."""
    from flows.mine import mine_flow
    from flows.params import MineParams
    from storage.workspace import resolve

    def go():
        return mine_flow(MineParams(
            workspace=resolve(workspace), dataset=dataset, rounds=rounds, policy=policy, quorum=quorum,
            selection=selection, target_precision=target_precision, weighting=weighting, folds=folds,
            seeds=csv_tuple(seeds, int), epochs=epochs, workers=workers, **pseudo_ratio_arg(pseudo_ratio)))

    summary = run_guarded(go)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    table = Table(title=f"mine: {summary['dataset']} (run {summary['run_id']})")
    for col in ("round", "pool", "accepted", "by label", "CV weighted F1", "stopped"):
        table.add_column(col)
    for r in summary["rounds"]:
        table.add_row(str(r["round"]), str(r["pool"]), str(r["accepted"]), str(r["accepted_by_label"]),
                      f"{r['cv_weighted_f1']:.3f}", r["stopped"] or "")
    out.print(table)


@app.command()
def finalize(
    workspace: WorkspaceOpt = None,
    dataset: Annotated[str | None, typer.Option(help="dataset [default: the only one]")] = None,
    mine_run: Annotated[str | None, typer.Option(
        help="mining run whose pseudo-labels join training [default: the newest completed]")] = None,
    weighting: Annotated[str, typer.Option(help="pseudo-label weight: hard or confidence")] = "hard",
    members: Annotated[str, typer.Option(help="ensemble members, comma-separated <fusion>/<head>")
                       ] = "moe/final,attention/final",
    ensemble: Annotated[str, typer.Option(help="soft (mean probability) or hard (majority vote)")] = "soft",
    rule: Annotated[list[str] | None, typer.Option(
        help="re-ranking rule, repeatable, in order, e.g. demote:label=worried,margin=0.1 "
             "[default: prior, demote worried, teacher_override]")] = None,
    no_rules: Annotated[bool, typer.Option("--no-rules", help="no re-ranking")] = False,
    force_rules: Annotated[bool, typer.Option(
        "--force-rules", help="apply every rule as given, without validating it")] = False,
    refine: Annotated[str, typer.Option(help="label refinement: off, flag or down-weight")] = "flag",
    down_weight: Annotated[float, typer.Option(help="weight of a down-weighted human label")] = 0.5,
    folds: Annotated[int, typer.Option(help="cross-validation folds")] = 5,
    seeds: Annotated[str, typer.Option(help="seeds, comma-separated")] = "0,1,2",
    epochs: Annotated[int, typer.Option(help="most epochs per fold")] = 80,
    workers: Annotated[int, typer.Option(
        help="processes fitting fold models side by side (same results)")] = 1,
    pseudo_ratio: PseudoRatioOpt = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="also copy the submission here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Second stage (retrain on human + accepted labels), ensemble, re-ranking, submission file."""
    from flows.finalize import finalize_flow
    from flows.params import FinalizeParams
    from storage.workspace import resolve

    def go():
        extra = {"rules": ()} if no_rules else ({"rules": tuple(rule)} if rule else {})
        return finalize_flow(FinalizeParams(
            workspace=resolve(workspace), dataset=dataset, mine_run=mine_run, weighting=weighting,
            members=csv_tuple(members, str), ensemble=ensemble, validate_rules=not force_rules,
            refine=refine, down_weight=down_weight, folds=folds, seeds=csv_tuple(seeds, int),
            epochs=epochs, workers=workers, out=out_file, **extra, **pseudo_ratio_arg(pseudo_ratio)))

    summary = run_guarded(go)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    out.print(f"finalize {summary['dataset']} (run {summary['run_id']}): {summary['n_human']} human + "
              f"{summary['n_pseudo']} pseudo-labels from {summary['mine_run']}; "
              f"{summary['flagged_labels']} human labels flagged", highlight=False)
    table = Table(title="re-ranking rules")
    for col in ("rule", "kept", "why"):
        table.add_column(col)
    for r in summary["rules"]:
        table.add_row(r["rule"], "yes" if r["kept"] else "no", r["reason"])
    out.print(table)
    out.print(f"{summary['candidates']} candidates, {summary['fallback']} fell back; "
              f"labels {summary['label_counts']}", highlight=False)
    out.print(f"submission: {summary['submission']}", highlight=False)


@app.command()
def serve(
    config: Annotated[Path, typer.Option(help="pipeline configuration (YAML) the runs use")],
    setting: Annotated[list[str] | None, typer.Option("--set", help="SECTION.KEY=VALUE override")] = None,
    cron: Annotated[str, typer.Option(help="schedule (cron, UTC)")] = "0 2 * * *",
    name: Annotated[str, typer.Option(help="deployment name")] = "nightly-round",
) -> None:
    """Serve the pipeline from this host on a schedule (no work pool needed); Ctrl-C stops.

    Each scheduled run re-ingests the dataset: clips added since the last run are the only ones
    that cost feature extraction and teacher calls (the rest come from the caches)."""
    from flows.config import load_config
    from flows.pipeline import pipeline_flow

    params = run_guarded(load_config, config, list(setting or []))
    out.print(f"serving pipeline `{name}` on cron {cron!r} (UTC) for {params.dataset_dir}", highlight=False)
    pipeline_flow.serve(name=name, cron=cron, parameters={"params": params.model_dump(mode="json")},
                        limit=1)


@app.command()
def server(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 4200,
) -> None:
    """Start a Prefect server with its UI (loopback by default); point PREFECT_API_URL at it."""
    import os

    out.print(f"Prefect UI on http://{host}:{port}; in other shells: "
              f"export PREFECT_API_URL=http://{host}:{port}/api", highlight=False)
    # The UI calls the API at PREFECT_SERVER_UI_API_URL, which otherwise says port 4200.
    os.environ.setdefault("PREFECT_SERVER_UI_API_URL", f"http://{host}:{port}/api")
    prefect = Path(sys.executable).parent / "prefect"
    os.execv(str(prefect), [str(prefect), "server", "start", "--host", host, "--port", str(port)])


@app.command()
def status(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Datasets, clip counts by split and status, and the latest runs of a workspace."""
    from storage.workspace import Workspace

    def go():
        ws = Workspace(workspace)
        with ws.catalog.reader() as s:
            return {
                "workspace": str(ws.root),
                "clips": s.records("clip_status_counts"),
                "runs": s.records("list_runs", limit=10),
            }

    summary = run_guarded(go)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    table = Table(title=f"clips in {summary['workspace']}")
    for col in ("dataset", "split", "status", "clips"):
        table.add_column(col)
    for r in summary["clips"]:
        table.add_row(r["dataset"], r["split"], r["status"], str(r["n_clips"]))
    out.print(table)
    runs = Table(title="latest runs")
    for col in ("run_id", "command", "status", "started_at", "error"):
        runs.add_column(col)
    for r in summary["runs"]:
        runs.add_row(*(str(r[k] or "") for k in ("run_id", "command", "status", "started_at",
                                                  "error")))
    out.print(runs)


@app.command()
def check(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Run the catalog's invariant queries; exit 1 if any returns a row."""
    from storage.catalog import check_names
    from storage.workspace import Workspace

    failed = run_guarded(lambda: Workspace(workspace).catalog.failed_checks())
    summary = {"checks": check_names(), "failed": {k: len(v) for k, v in failed.items()}}
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        for name in summary["checks"]:
            mark = "[red]FAIL[/]" if name in failed else "[green]ok[/]"
            out.print(f"{mark} {name}" + (f" ({len(failed[name])} rows)" if name in failed else ""))
    if failed:
        raise typer.Exit(1)


def main() -> None:
    app(prog_name="mersemi")


if __name__ == "__main__":
    sys.exit(main())
