"""Run parameters: pydantic models, validated before anything runs."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.extractors import DEFAULT_SET, EXTRACTORS
from storage.labels import MER2025_LABELS, parse_label_set
from tasks.rerank import DEFAULT_RULES, Rule


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

    @field_validator("extractors")
    @classmethod
    def _known(cls, value):
        unknown = [n for n in value if n not in EXTRACTORS]
        if unknown:
            raise ValueError(f"unknown extractor(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(EXTRACTORS)}")
        return tuple(dict.fromkeys(value))


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


class MineParams(TrainParams):
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


class FinalizeParams(TrainParams):
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
