"""Pipeline configuration: one YAML file, with command-line overrides (`section.key=value`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from flows.params import PipelineParams


def load_config(path: Path | None, overrides: list[str] = (), **top: object) -> PipelineParams:
    """The pipeline's parameters from `path` (YAML), then `overrides` such as `mine.rounds=2` or
    `teacher.backend=replay` (values parsed as YAML scalars or lists), then `top`-level values
    given on the command line (None: not given). Validated before anything runs."""
    data: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config file {path}: expected a mapping at the top, "
                             f"got {type(loaded).__name__}")
        data = loaded or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE or KEY=VALUE")
        *sections, leaf = key.strip().split(".")
        node = data
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {section} is not a section")
        node[leaf] = yaml.safe_load(value) if value.strip() else None
    data.update({k: v for k, v in top.items() if v is not None})
    return PipelineParams.model_validate(data)


def dump_config(params: PipelineParams) -> str:
    """The parameters as YAML (what `mersemi run --print-config` shows)."""
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
