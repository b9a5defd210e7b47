"""Stage: report. `ReportData` of one mining run (storage/report_data.py) -> one HTML page.

Input: the frames `storage.report_data.report_data` gathers (rounds, decisions, votes, human
labels, accepted pseudo-labels, out-of-fold predictions, final predictions, rule changes,
label flags, and the truth tables when a truth CSV was given).
Output: one self-contained HTML file (inline CSS, figures as base64 PNG, no script and no
external URL) at <workspace>/reports/<mine run>.html, and a markdown digest of its key tables
for the Prefect UI. Every number is counted or scored here from those frames; a part the
workspace does not have (no finalize run, no teacher, no truth) is said, never made up.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.artifacts import atomic_write
from storage.report_data import ReportData, report_data
from tasks.finalize import ensemble_scores

SECTIONS = ("Runs and parameters", "Acceptance per round and label", "Class balance",
            "Weighted F1", "Confusion matrices", "Teacher agreement", "Re-ranking and label flags")
CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:2px solid #ccd;padding-bottom:3px;
margin-top:30px}h3{font-size:15px;margin:14px 0 6px}table{border-collapse:collapse;margin:6px 0 12px}
td,th{border:1px solid #ccd;padding:3px 8px;text-align:right}th{background:#eef0f6}
td.t,th.t{text-align:left}.note{background:#fff6dd;border-left:4px solid #e0b040;padding:6px 10px;
margin:6px 0}.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}img{max-width:100%}
code{font-size:12px;background:#f3f3f6;padding:1px 3px}.muted{color:#667}.half{max-width:570px}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}"""


# ---- scores and counts (plain frames in, plain frames out) ----

def acceptance(decisions: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """round, label, proposed (pool clips the voters gave that label), accepted, rate."""
    rows = decisions[decisions["label"].notna()]
    grid = pd.MultiIndex.from_product([sorted(decisions["round"].unique()), list(labels)],
                                      names=["round", "label"])
    proposed = rows.groupby(["round", "label"])["n"].sum().reindex(grid, fill_value=0)
    taken = rows[rows["decision"] == "accepted"].groupby(["round", "label"])["n"].sum()
    out = pd.DataFrame({"proposed": proposed, "accepted": taken.reindex(grid, fill_value=0)}).reset_index()
    out["rate"] = out["accepted"] / out["proposed"].where(out["proposed"] > 0)
    return out


def class_balance(human: pd.DataFrame, accepted: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """label, labelled, labelled_share, accepted, accepted_share (accepted over all rounds)."""
    lab = human["label"].value_counts().reindex(list(labels), fill_value=0)
    acc = accepted["label"].value_counts().reindex(list(labels), fill_value=0)
    out = pd.DataFrame({"label": list(labels), "labelled": lab.to_numpy(), "accepted": acc.to_numpy()})
    out["labelled_share"] = out["labelled"] / max(int(out["labelled"].sum()), 1)
    out["accepted_share"] = out["accepted"] / max(int(out["accepted"].sum()), 1)
    return out[["label", "labelled", "labelled_share", "accepted", "accepted_share"]]


def scores(truth: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict:
    """n, weighted_f1, accuracy and the confusion matrix (rows: truth) of predicted labels.

    Weighted F1 as models/metrics.py reports it (scikit-learn's, zero_division=0), in numpy:
    the report scores every head of every stage, and scikit-learn's checks cost more than the
    arithmetic."""
    index = {lab: i for i, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, ([index[x] for x in truth], [index[x] for x in pred]), 1)
    tp, support, predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(len(labels)), where=denom > 0)
    n = int(matrix.sum())
    return {"n": n, "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
            "accuracy": float(tp.sum() / n) if n else 0.0, "matrix": matrix}


def predicted_labels(probs: pd.DataFrame, labels: Sequence[str]) -> pd.Series:
    """The argmax label of p_<label> columns per row (index clip_id); rows with a NaN are dropped."""
    cols = [f"p_{lab}" for lab in labels]
    known = probs.dropna(subset=cols)
    return pd.Series(np.asarray(labels)[known[cols].to_numpy().argmax(axis=1)], index=known["clip_id"])


def head_f1(oof: dict[str, pd.DataFrame], human: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """stage, head, n, weighted_f1 of every head's seed-averaged OOF on the human-labelled clips."""
    truth = human.set_index("clip_id")["label"]
    rows = []
    for stage, frame in oof.items():
        for (fusion, head), group in frame.groupby(["fusion", "head"], sort=True):
            pred = predicted_labels(group, labels)
            if len(pred):
                score = scores(truth.loc[pred.index].tolist(), pred.tolist(), labels)["weighted_f1"]
                rows.append({"stage": stage, "head": f"{fusion}/{head}", "n": len(pred),
                             "weighted_f1": score})
    return pd.DataFrame(rows, columns=["stage", "head", "n", "weighted_f1"])


def validation_predictions(data: ReportData) -> tuple[str, pd.Series] | None:
    """(what, clip_id -> label) of the final models on the human-labelled clips: the finalize
    run's ensemble of its members over OOF, else the last round's baseline head; None if none."""
    if "final" in data.oof and data.members:
        method = data.runs.set_index("run_id").loc[data.finalize_run, "params"].get("ensemble", "soft")
        ens = ensemble_scores(data.oof["final"].assign(seed="mean"), data.members, data.labels, method)
        what = f"final stage: {method} ensemble of {', '.join(data.members)}"
        return what, predicted_labels(ens, data.labels)
    rounds = [s for s in data.oof if s.startswith("round-")]
    if not rounds:
        return None
    params = data.runs.set_index("run_id").loc[data.mine_run, "params"]
    fusion, _, head = params.get("baseline", "moe/final").partition("/")
    frame = data.oof[rounds[-1]]
    rows = frame[(frame["fusion"] == fusion) & (frame["head"] == head)]
    return f"{rounds[-1]}: baseline head {fusion}/{head}", predicted_labels(rows, data.labels)


def teacher_agreement(votes: pd.DataFrame, by: str = "round") -> pd.DataFrame:
    """by (round, or label: the teacher's label), voter, n, agree, rate: how often each model
    head voted the teacher's label, over the pool clips both voted on."""
    teacher = votes[votes["voter"] == "teacher"][["round", "clip_id", "label"]]
    heads = votes[votes["voter"] != "teacher"]
    both = heads.merge(teacher, on=["round", "clip_id"], suffixes=("", "_teacher"))
    both["agree"] = both["label"] == both["label_teacher"]
    key = "label_teacher" if by == "label" else "round"
    out = both.groupby([key, "voter"]).agg(n=("agree", "size"), agree=("agree", "sum")).reset_index()
    out["rate"] = out["agree"] / out["n"]
    return out.rename(columns={"label_teacher": "label"})


# ---- HTML pieces ----

def esc(value) -> str:
    """Catalog text as HTML text (every string from the catalog goes through here)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float | np.floating):
        return f"{value:.3f}"
    return esc(value)


def table(frame: pd.DataFrame, text_columns: Sequence[str] | None = None) -> str:
    """An HTML table; `text_columns` (default: the object columns) are left-aligned."""
    left = set(text_columns) if text_columns is not None else {
        c for c in frame.columns if frame[c].dtype == object}
    cls = {c: ' class="t"' if c in left else "" for c in frame.columns}
    head = "".join(f"<th{cls[c]}>{esc(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td{cls[c]}>{fmt(v)}</td>"
                                    for c, v in zip(frame.columns, row, strict=True)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def figure_png(fig: Figure, alt: str) -> str:
    """A matplotlib figure as an <img> with a base64 PNG data URI (Agg, through savefig)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def colours(labels: Sequence[str]) -> dict[str, tuple]:
    """One fixed colour per label, in label-set order (the same label looks the same everywhere)."""
    cmap = colormaps["tab10"]
    return {lab: cmap(i % 10) for i, lab in enumerate(labels)}


# ---- figures ----

def stacked_bar(acc: pd.DataFrame, labels: Sequence[str]) -> str:
    fig = Figure(figsize=(5.2, 3.2))
    ax = fig.subplots()
    rounds = sorted(acc["round"].unique())
    bottom = np.zeros(len(rounds))
    for lab, colour in colours(labels).items():
        n = acc[acc["label"] == lab].set_index("round")["accepted"].reindex(rounds, fill_value=0).to_numpy()
        ax.bar([str(r) for r in rounds], n, bottom=bottom, label=lab, color=colour)
        bottom += n
    ax.set(xlabel="round", ylabel="accepted clips", title="accepted pseudo-labels per round")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    return figure_png(fig, "accepted pseudo-labels per round and label (stacked bars)")


def balance_bars(balance: pd.DataFrame) -> str:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    x = np.arange(len(balance))
    ax.bar(x - 0.2, balance["labelled_share"], 0.4, label="human-labelled", color="#4c72b0")
    ax.bar(x + 0.2, balance["accepted_share"], 0.4, label="accepted pseudo-labels", color="#dd8452")
    ax.set_xticks(x, balance["label"], rotation=30, ha="right")
    ax.set(ylabel="share of clips", title="class balance")
    ax.legend(fontsize=8, frameon=False)
    return figure_png(fig, "class balance: human-labelled vs accepted shares per label")


def line_plot(frame: pd.DataFrame, x: str, y: str, series: str, title: str, ylabel: str) -> str:
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    order = list(dict.fromkeys(frame[x]))
    for name, group in frame.groupby(series, sort=True):
        g = group.set_index(x)[y].reindex(order)
        ax.plot([str(v) for v in order], g.to_numpy(), marker="o", label=str(name))
    ax.set(xlabel=x, ylabel=ylabel, title=title, ylim=(0, 1.02))
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    return figure_png(fig, title)


def heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str,
            xlabel: str, ylabel: str, fmt_cell: str = "{:.0f}") -> str:
    fig = Figure(figsize=(0.55 * len(cols) + 2.4, 0.45 * len(rows) + 1.6))
    ax = fig.subplots()
    shown = np.nan_to_num(matrix.astype(float), nan=0.0)
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=max(float(shown.max()), 1e-9))
    for (i, j), v in np.ndenumerate(matrix):
        if not np.isnan(v):
            ax.text(j, i, fmt_cell.format(v), ha="center", va="center", fontsize=8,
                    color="white" if v > 0.6 * shown.max() else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return figure_png(fig, title)


def confusion_block(title: str, what: str, truth: Sequence[str], pred: Sequence[str],
                    labels: Sequence[str]) -> str:
    got = scores(list(truth), list(pred), labels)
    caption = (f"<h3>{esc(title)}</h3><p>{esc(what)}: {got['n']} clips, "
               f"weighted F1 {got['weighted_f1']:.3f}, accuracy {got['accuracy']:.3f} "
               "(rows: true label, columns: predicted)</p>")
    return caption + heatmap(got["matrix"], labels, labels, title, "predicted", "true")


# ---- sections ----

def section(title: str, *parts: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'


def ratio_table(frame: pd.DataFrame, rows: str, cols: str, num: str, den: str,
                order: Sequence | None = None) -> pd.DataFrame:
    """A wide table of "num/den (rate)" cells: `rows` down, `cols` across (in `order`)."""
    cell = [f"{a}/{b} ({fmt(a / b) if b else '–'})" for a, b in zip(frame[num], frame[den], strict=True)]
    wide = frame.assign(cell=cell).pivot(index=rows, columns=cols, values="cell")
    if order is not None:
        wide = wide.reindex(columns=[c for c in order if c in wide.columns])
    return wide.fillna("–").reset_index().rename_axis(columns=None)


def runs_section(data: ReportData) -> str:
    runs = data.runs[["run_id", "command", "status", "started_at", "finished_at", "code_version",
                      "flow_run_id"]].rename(columns={"flow_run_id": "Prefect flow run"})
    for col in ("started_at", "finished_at"):
        runs[col] = pd.to_datetime(runs[col]).dt.strftime("%Y-%m-%d %H:%M:%S")
    # One row per parameter, one column per run: both runs' settings side by side, folded away
    # (a <details> element: no script needed) so the results come first.
    names = sorted(set().union(*data.runs["params"]))
    params = pd.DataFrame({"parameter": names} | {
        row.command: [json.dumps(row.params[n], default=str) if n in row.params else "–" for n in names]
        for row in data.runs.itertuples(index=False)})
    rounds = data.rounds.rename(columns={"cv_weighted_f1": "CV wF1 (baseline, human labels)"})
    return section(SECTIONS[0], table(runs), "<h3>Mining rounds</h3>", table(rounds),
                   f"<details><summary>Parameters ({len(names)})</summary>"
                   f"{table(params, tuple(params.columns))}</details>")


def acceptance_section(data: ReportData) -> str:
    acc = acceptance(data.decisions, data.labels)
    if acc.empty:
        return section(SECTIONS[1], note("the mining run recorded no decision"))
    parts = ["<p>Accepted / proposed pool clips per round and label (proposed: the voters gave the clip "
             "that label; a discarded round's clips count as rejected), and the rate.</p>",
             '<div class="row"><div>', table(ratio_table(acc, "round", "label", "accepted", "proposed",
                                                         data.labels), ()), "</div>",
             stacked_bar(acc, data.labels), "</div>"]
    if data.truth_accepted is not None:
        prec = data.truth_accepted.assign(precision=lambda f: f["correct"] / f["n"])
        parts += [f"<h3>Precision of the accepted pseudo-labels against {esc(data.truth)}</h3>",
                  table(prec)]
    return section(SECTIONS[1], *parts)


def balance_section(data: ReportData) -> str:
    balance = class_balance(data.human, data.accepted, data.labels)
    return section(SECTIONS[2], '<div class="row">', table(balance), balance_bars(balance), "</div>")


def f1_section(data: ReportData) -> str:
    f1 = head_f1(data.oof, data.human, data.labels)
    if f1.empty:
        return section(SECTIONS[3], note("no out-of-fold predictions of human-labelled clips were found"))
    wide = f1.pivot(index="head", columns="stage", values="weighted_f1")[list(data.oof)]
    return section(SECTIONS[3], "<p>Weighted F1 of every head's seed-averaged out-of-fold predictions "
                   "on the human-labelled clips, per training stage (mining rounds, then the final "
                   "stage).</p>", '<div class="row">', table(wide.reset_index(), ("head",)),
                   line_plot(f1, "stage", "weighted_f1", "head", "weighted F1 per stage and head",
                             "weighted F1"), "</div>")


def confusion_section(data: ReportData) -> str:
    parts = []
    validation = validation_predictions(data)
    if validation is None:
        parts.append(note("no out-of-fold predictions: no validation confusion matrix"))
    else:
        what, pred = validation
        truth = data.human.set_index("clip_id")["label"].loc[pred.index]
        parts.append(confusion_block("validation (OOF)", what, truth, pred, data.labels))
    if data.truth_final is not None and len(data.truth_final):
        parts.append(confusion_block("test clips", f"final labels against {data.truth}",
                                     data.truth_final["truth"], data.truth_final["label"], data.labels))
    elif data.truth is not None:
        parts.append(note("the truth file names none of the finalize run's predicted clips"))
    return section(SECTIONS[4], '<div class="row">', *[f'<div class="half">{p}</div>' for p in parts],
                   "</div>")


def teacher_section(data: ReportData) -> str:
    if "teacher" not in set(data.votes["voter"]):
        return section(SECTIONS[5], note("no teacher voted in this mining run"))
    per_round = teacher_agreement(data.votes, "round")
    per_label = teacher_agreement(data.votes, "label")
    grid = ratio_table(per_label, "voter", "label", "agree", "n", data.labels)
    rates = per_label.pivot(index="voter", columns="label", values="rate").reindex(
        index=grid["voter"], columns=grid.columns[1:])
    return section(SECTIONS[5], "<p>Pool clips on which a model head voted the teacher's label, over "
                   "the clips both voted on (agree/n (rate)).</p>", '<div class="row"><div>',
                   table(ratio_table(per_round, "voter", "round", "agree", "n"), ("voter",)), "</div>",
                   line_plot(per_round, "round", "rate", "voter", "agreement with the teacher per round",
                             "agreement"), "</div>",
                   "<h3>Per teacher label, all rounds</h3>", '<div class="row"><div>',
                   table(grid, ("voter",)), "</div>",
                   heatmap(rates.to_numpy(), list(rates.index), list(rates.columns), "agreement with the "
                           "teacher per label", "teacher's label", "head", "{:.2f}"), "</div>")


def final_section(data: ReportData) -> str:
    if data.finalize_run is None:
        return section(SECTIONS[6], note("no finalize run yet: no final labels, rule changes or flags"))
    final, labels = data.final, list(data.labels)
    counts = pd.DataFrame({"label": labels,
                           "model label": final["model_label"].value_counts().reindex(labels, fill_value=0),
                           "final label": final["label"].value_counts().reindex(labels, fill_value=0)})
    changes = (table(data.rule_changes, ("rule", "before", "after")) if len(data.rule_changes)
               else "<p>No rule changed a final label.</p>")
    flags = (table(data.label_flags, ("label", "alternative", "action")) if len(data.label_flags)
             else "<p>No human label was flagged.</p>")
    return section(SECTIONS[6], f"<p>{len(final)} candidate clips scored by finalize run "
                   f"<code>{esc(data.finalize_run)}</code>.</p>", '<div class="row"><div>',
                   table(counts), "</div><div><h3>Rule changes</h3>", changes,
                   "</div><div><h3>Flagged human labels</h3>", flags, "</div></div>")


def build_report(data: ReportData) -> str:
    """The whole report as one self-contained HTML string."""
    notes = "".join(note(n) for n in data.notes)
    body = "".join(render(data) for render in (runs_section, acceptance_section, balance_section, f1_section,
                                               confusion_section, teacher_section, final_section))
    title = f"mersemi run report: {data.dataset}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
            f'<p class="muted">mining run <code>{esc(data.mine_run)}</code>'
            + (f", finalize run <code>{esc(data.finalize_run)}</code>" if data.finalize_run else "")
            + f"; workspace <code>{esc(data.workspace)}</code></p>{notes}{body}</body></html>")


# ---- the markdown digest, the file, the task ----

def md_table(frame: pd.DataFrame) -> str:
    """A markdown table (the Prefect UI renders it); '|' in catalog text is escaped."""
    cells = [[fmt(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def report_markdown(data: ReportData, path: Path) -> str:
    """The report's key tables in markdown: rounds, acceptance, class balance, F1, teacher agreement."""
    acc = acceptance(data.decisions, data.labels)
    parts = [f"# Run report: `{data.dataset}`", "",
             f"Mining run `{data.mine_run}`, finalize run `{data.finalize_run or 'none yet'}`. "
             f"Full report: `{path}`", "", *[f"> {n}" for n in data.notes], "",
             "## Rounds", md_table(data.rounds), ""]
    if not acc.empty:
        wide = acc.pivot(index="round", columns="label", values="accepted").reindex(columns=list(data.labels))
        parts += ["## Accepted per round and label", md_table(wide.reset_index()), ""]
    parts += ["## Class balance", md_table(class_balance(data.human, data.accepted, data.labels)), ""]
    f1 = head_f1(data.oof, data.human, data.labels)
    if len(f1):
        wide = f1.pivot(index="head", columns="stage", values="weighted_f1")[list(data.oof)]
        parts += ["## Weighted F1 on human labels (OOF)", md_table(wide.reset_index()), ""]
    if "teacher" in set(data.votes["voter"]):
        parts += ["## Agreement with the teacher", md_table(teacher_agreement(data.votes, "round"))]
    return "\n".join(parts)


def write_report(text: str, path: Path) -> Path:
    """Write the HTML atomically (a reader never sees half a report)."""
    atomic_write(path, text.encode("utf-8"))
    path.chmod(0o644)            # the temporary file was private; a report is for reading
    return path


def build_report_file(workspace: str | Path, dataset: str | None = None, mine_run: str | None = None,
                      finalize_run: str | None = None, truth: str | Path | None = None,
                      out: str | Path | None = None) -> dict:
    """Gather, render and write the report of one mining run (default: the newest completed one)
    to `out` or <workspace>/reports/<mine run>.html. Returns path, markdown, dataset, mine_run,
    finalize_run, notes."""
    data = report_data(workspace, dataset, mine_run, finalize_run, truth)
    path = Path(out) if out else Path(workspace) / "reports" / f"{data.mine_run}.html"
    write_report(build_report(data), path)
    return {"path": str(path.resolve()), "markdown": report_markdown(data, path.resolve()),
            "dataset": data.dataset, "mine_run": data.mine_run, "finalize_run": data.finalize_run,
            "notes": list(data.notes)}


build_report_task = task(build_report_file, name="build-report", cache_policy=NO_CACHE)
