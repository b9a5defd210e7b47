"""Run parameters: pydantic models, validated before anything runs."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from storage.labels import MER2025_LABELS, parse_label_set


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
