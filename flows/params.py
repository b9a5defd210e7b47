"""Run parameters: pydantic models, validated before anything runs."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.extractors import DEFAULT_SET, EXTRACTORS
from storage.labels import MER2025_LABELS, parse_label_set
from tasks.rerank import DEFAULT_RULES, Rule
from tasks.teacher import ENRICH_PROMPT, LABEL_PROMPT, ORDERS

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# Pseudo-labels per epoch as a multiple of the human labels (None: all); chosen on validation
# folds (docs/benchmarks.md, bench/pseudo_ratio.py).
PSEUDO_RATIO: float | None = None


class IngestParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_dir: Path = Field(description="dataset folder (MER2025 layout or videos) or manifest CSV")
    workspace: Path = Field(description="workspace folder (artifact store and catalog)")
    labels: tuple[str, ...] = Field(default=MER2025_LABELS, description="the label set, in order")
    layout: str | None = Field(default=None, pattern="^(mer2025|manifest|folder)$",
                               description="force a layout instead of detecting it")
    text_column: str = Field(default="english", pattern="^(english|chinese)$",
                             description="subtitle_chieng.csv column used as the transcript")
    dataset: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                                description="dataset name (default: the folder's name)")
    jobs: int = Field(default=2, ge=1, le=64, description="processes probing media")

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value):
        return parse_label_set(value)


class FeaturesParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Path = Field(description="workspace folder (artifact store and catalog)")
    dataset: str | None = Field(default=None, description="dataset name (default: the only one)")
    extractors: tuple[str, ...] = Field(default=DEFAULT_SET, min_length=1,
                                        description="extractors to run, by name")
    extractor_params: dict[str, dict] = Field(default_factory=dict,
                                              description="per-extractor parameters, by name")
    workers: int = Field(default=2, ge=1, le=64, description="worker processes")
    shard_size: int = Field(default=200, ge=1, le=10_000, description="clips per shard")
    batch_size: int = Field(default=16, ge=1, le=512, description="clips decoded together")
    max_side: int = Field(default=640, ge=64, le=4096, description="frames downscaled to this long side")
    task_runner: str = Field(default="processes", pattern="^(processes|dask)$",
                             description="processes: `workers` spawned processes on this host; dask: "
                             "Prefect's Dask task runner, on a local cluster of `workers` processes "
                             "or on the cluster at dask_address")
    dask_address: str | None = Field(default=None, pattern=r"^(tcp|tls|inproc|ucx)://\S+$",
                                     description="scheduler of an existing Dask cluster, e.g. "
                                     "tcp://10.0.0.5:8786 (its workers must see the workspace)")

    @model_validator(mode="after")
    def _dask(self):
        if self.dask_address and self.task_runner != "dask":
            raise ValueError("dask_address is set but task_runner is not dask")
        return self

    @field_validator("extractors")
    @classmethod
    def _known(cls, value):
        unknown = [n for n in value if n not in EXTRACTORS]
        if unknown:
            raise ValueError(f"unknown extractor(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(EXTRACTORS)}")
        return tuple(dict.fromkeys(value))


class TeacherParams(BaseModel):
    """The teacher stage's settings. The API key is not one of them: it comes from the
    environment or a Prefect Secret block, so it never lands in the recorded parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Path = Field(description="workspace folder (artifact store and catalog)")
    dataset: str | None = Field(default=None, pattern=NAME,
                                description="an ingested dataset [default: the only one]")
    split: str = Field(default="candidate", pattern="^(candidate|train|test)$",
                       description="which clips to ask about")
    backend: str = Field(default="gemini", pattern="^(gemini|replay|local)$")
    answers: Path | None = Field(default=None, description="replay: JSONL answers file")
    predictions: Path | None = Field(default=None, description="Parquet: clip_id, p_<label> "
                                     "[, model]; orders the pool; the local teacher's answers")
    model: str | None = Field(default=None, description="model name [gemini: gemini-2.5-flash]")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    prompt: str = Field(default=LABEL_PROMPT, min_length=20, description="label prompt template")
    enrich_prompt: str = Field(default=ENRICH_PROMPT, min_length=20)
    media: str = Field(default="mp4", pattern="^(mp4|frames)$",
                       description="mp4 (inline or File API) or sampled frames + audio")
    n_frames: int = Field(default=8, ge=1, le=64)
    inline_max_mb: float = Field(default=18.0, gt=0, le=100)
    base_url: str | None = Field(default=None, description="API endpoint (tests, proxies)")
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    usd_per_mtok_in: float = Field(default=0.30, ge=0)
    usd_per_mtok_out: float = Field(default=2.50, ge=0)
    secret_block: str | None = Field(default=None, pattern=NAME,
                                     description="Prefect Secret block holding the API key")
    enrich: bool = Field(default=False, description="also rewrite subtitles with emotional cues")
    max_requests: int | None = Field(default=None, ge=0, le=10_000_000)
    max_cost_usd: float | None = Field(default=None, ge=0, le=100_000)
    rpm: int | None = Field(default=None, ge=1, le=100_000, description="requests per minute")
    concurrency: int = Field(default=4, ge=1, le=64, description="requests in flight in one run")
    task_concurrency: int = Field(default=1, ge=1, le=64,
                                  description="teacher tasks running at once across all flow runs on "
                                  "the Prefect server (a tag concurrency limit, created if absent)")
    order: str = Field(default="auto", pattern="^(" + "|".join(ORDERS) + ")$")
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_initial_s: float = Field(default=1.0, ge=0, le=600)
    retry_max_s: float = Field(default=60.0, ge=0, le=3600)

    def gemini_settings(self) -> dict:
        return {"temperature": self.temperature, "prompt": self.prompt,
                "enrich_prompt": self.enrich_prompt, "media": self.media, "n_frames": self.n_frames,
                "inline_max_bytes": int(self.inline_max_mb * 1e6), "base_url": self.base_url,
                "timeout_s": self.timeout_s, "usd_per_mtok_in": self.usd_per_mtok_in,
                "usd_per_mtok_out": self.usd_per_mtok_out}


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Path
    dataset: str | None = None
    fusions: tuple[str, ...] = Field(default=("moe", "attention"), min_length=1,
                                     description="fusion heads to train; the first one predicts")
    experts: tuple[str, ...] = Field(default=(), description="experts to use [default: all available]")
    folds: int = Field(default=5, ge=2, le=20)
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), min_length=1, max_length=20)
    hidden: int = Field(default=64, ge=8, le=1024)
    dropout: float = Field(default=0.3, ge=0.0, lt=1.0)
    epochs: int = Field(default=80, ge=1, le=1000)
    patience: int = Field(default=12, ge=1, le=1000)
    lr: float = Field(default=1e-3, gt=0, le=1.0)
    weight_decay: float = Field(default=1e-3, ge=0, le=1.0)
    class_weighted: bool = False
    aux_weight: float = Field(default=0.5, ge=0, le=10)
    workers: int = Field(default=1, ge=1, le=64,
                         description="processes fitting fold models side by side (forked; one torch "
                         "thread each); the results do not depend on it")

    @field_validator("fusions")
    @classmethod
    def _fusions(cls, value):
        bad = [f for f in value if f not in ("moe", "attention")]
        if bad:
            raise ValueError(f"unknown fusion(s) {', '.join(bad)}; choose moe and/or attention")
        return tuple(dict.fromkeys(value))


class PredictParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Path
    dataset: str | None = None
    train_run: str | None = Field(default=None, description="training run [default: the newest]")
    head: str = Field(default="final", description="final, fused or expert:<name>")
    out: Path | None = Field(default=None, description="also copy the submission file here")


class PseudoTrainParams(TrainParams):
    """Training on human labels and pseudo-labels (mining rounds, the second stage)."""

    pseudo_ratio: float | None = Field(
        default=PSEUDO_RATIO, gt=0, le=1000,
        description="pseudo-labels drawn afresh each epoch, as a multiple of the fold's human "
        "labels (bounds a round's training time by the human labels); null: all, every epoch")


class MineParams(PseudoTrainParams):
    """Multi-round voting data mining: the training settings plus the policy and the rounds."""

    rounds: int = Field(default=3, ge=1, le=50, description="most rounds")
    policy: str = Field(default="both", pattern="^(consensus|vote|both)$")
    baseline: str = Field(default="moe/final", description="the head the teacher must confirm")
    voters: tuple[str, ...] = Field(default=("moe/final", "attention/final", "moe/fused", "teacher"),
                                    min_length=1, description="heads (<fusion>/<head>) and 'teacher'")
    quorum: int = Field(default=3, ge=1, le=50)
    selection: str = Field(default="estimated", pattern="^(estimated|threshold)$",
                           description="accept the largest set whose estimated precision reaches the "
                           "target, or per-label out-of-fold confidence thresholds")
    target_precision: float = Field(default=0.95, gt=0, le=1,
                                    description="precision the accepted pseudo-labels must reach")
    min_share_ratio: float = Field(default=0.5, ge=0, le=1,
                                   description="no accepted label below this x its labelled share")
    weighting: str = Field(default="hard", pattern="^(hard|confidence)$",
                           description="pseudo-label weight: 1, or the decision's confidence")
    max_f1_drop: float = Field(default=0.0, ge=0, le=1,
                               description="stop when CV weighted F1 falls by more than this")


class FinalizeParams(PseudoTrainParams):
    """Second stage, ensemble, re-ranking and the submission: the training settings plus these."""

    mine_run: str | None = Field(default=None, description="mining run whose accepted clips join "
                                 "training [default: the newest completed one]")
    weighting: str = Field(default="hard", pattern="^(hard|confidence)$",
                           description="pseudo-label weight: 1, or the decision's confidence")
    members: tuple[str, ...] = Field(default=("moe/final", "attention/final"), min_length=1,
                                     description="ensemble members (<fusion>/<head>)")
    ensemble: str = Field(default="soft", pattern="^(soft|hard)$",
                          description="soft: mean probability; hard: majority vote")
    rules: tuple[str, ...] = Field(default=DEFAULT_RULES, description="re-ranking rules, in order")
    validate_rules: bool = Field(default=True, description="keep a rule only if it raises "
                                 "validation weighted F1 (false: apply every rule as given)")
    refine: str = Field(default="flag", pattern="^(off|flag|down-weight)$",
                        description="label refinement: off, flag contradicted human labels, or "
                        "also down-weight them in the second stage")
    down_weight: float = Field(default=0.5, ge=0, le=1, description="weight of a down-weighted label")
    min_sources: int = Field(default=3, ge=1, le=100,
                             description="sources that must contradict a human label to flag it")
    out: Path | None = Field(default=None, description="also copy the submission file here")

    @field_validator("rules")
    @classmethod
    def _rules(cls, value):
        for text in value:
            Rule.parse(text)
        return value

    @field_validator("members")
    @classmethod
    def _members(cls, value):
        bad = [m for m in value if "/" not in m]
        if bad:
            raise ValueError(f"ensemble members are <fusion>/<head>, e.g. moe/final; got {', '.join(bad)}")
        return tuple(dict.fromkeys(value))


class ReportParams(BaseModel):
    """Which mining run to report on, and where the report goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Path = Field(description="workspace folder (artifact store and catalog)")
    dataset: str | None = Field(default=None, pattern=NAME,
                                description="an ingested dataset [default: the only one]")
    mine_run: str | None = Field(default=None, pattern=NAME,
                                 description="mining run [default: the newest completed one]")
    finalize_run: str | None = Field(default=None, pattern=NAME, description="finalize run "
                                     "[default: the newest completed one built on the mining run]")
    truth: Path | None = Field(default=None, description="CSV name,discrete of labels the pipeline "
                               "never saw (benchmark corpora): pseudo-label precision, test confusion")
    out: Path | None = Field(default=None, description="report file [default: "
                             "<workspace>/reports/<mine run>.html]")

    @field_validator("truth")
    @classmethod
    def _truth_exists(cls, value):
        if value is not None and not value.is_file():
            raise ValueError(f"truth file {value} does not exist")
        return value


STAGES = ("ingest", "features", "teacher", "mine", "finalize")


class PipelineParams(BaseModel):
    """The whole pipeline: where the data and the workspace are, which stages run, and each
    stage's settings (the fields of that stage's parameters, less dataset and workspace).
    Every section is validated against its stage's model before anything runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_dir: Path = Field(description="dataset folder (MER2025 layout or videos) or manifest CSV")
    workspace: Path = Field(description="workspace folder (artifact store and catalog)")
    stages: tuple[str, ...] = Field(default=STAGES, min_length=1, description="stages to run, in order")
    ingest: dict = Field(default_factory=dict, description="IngestParams fields")
    features: dict = Field(default_factory=dict, description="FeaturesParams fields")
    teacher: dict = Field(default_factory=lambda: {"backend": "gemini"}, description="TeacherParams fields")
    mine: dict = Field(default_factory=dict, description="MineParams fields")
    finalize: dict = Field(default_factory=dict, description="FinalizeParams fields")
    report: bool = Field(default=True, description="after mining, write the run report (HTML and "
                         "Prefect artifacts)")

    @field_validator("stages")
    @classmethod
    def _stages(cls, value):
        unknown = [s for s in value if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
        return tuple(s for s in STAGES if s in value)            # always in pipeline order

    @model_validator(mode="after")
    def _sections(self):
        for stage in STAGES:
            try:
                self.stage(stage)
            except ValidationError as exc:                        # say which section it was
                raise ValueError(f"{stage}: {exc}") from None
        return self

    def stage(self, name: str) -> BaseModel:
        """The validated parameters of one stage."""
        section = dict(getattr(self, name))
        for key in ("workspace", "dataset_dir"):
            if key in section:
                raise ValueError(f"{name}.{key}: set {key} once, at the top of the config")
        if name == "ingest":
            return IngestParams(dataset_dir=self.dataset_dir, workspace=self.workspace, **section)
        dataset = self.ingest.get("dataset")
        model = {"features": FeaturesParams, "teacher": TeacherParams, "mine": MineParams,
                 "finalize": FinalizeParams}[name]
        if dataset and "dataset" not in section:
            section["dataset"] = dataset
        return model(workspace=self.workspace, **section)
