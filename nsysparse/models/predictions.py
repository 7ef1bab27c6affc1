"""Prediction files: what a simulator or FLOP model says each op should take.

Formats (chosen by extension):
  .csv   one row per op; optional leading `# key: value` lines form the meta block
  .json  {"meta": {...}, "ops": [{...}, ...]}  (or a bare list of ops)
  .yaml  the same structure as JSON (needs PyYAML)
Columns: op (required), predicted_us (required; µs for ONE instance, not multiplied by the count),
layer_kind (dense | moe | mtp | other | any; default any = every layer kind), count_per_forward,
flops, bytes, comm_bytes, bound, source, notes. A simulator that reports totals can give
predicted_total_us and count_per_forward instead of predicted_us.
Op names go through the alias table of rules/vocabulary.toml (mla → fmha, low_latency_dispatch →
dispatch, moe_up_gate_proj → moe_up, ...); the original name is kept in `name`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nsysparse.errors import ConfigError
from nsysparse.outputs import note_input, write_text
from nsysparse.rules import RuleSet

COLUMNS = ["op", "name", "layer_kind", "count_per_forward", "predicted_us", "flops", "bytes", "comm_bytes", "bound", "source"]


@dataclass
class Predictions:
    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = ""


def _read_csv(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    meta: dict[str, Any] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    body = []
    for ln in lines:
        if ln.startswith("#"):
            if ":" in ln:
                k, v = ln[1:].split(":", 1)
                meta[k.strip()] = _scalar(v.strip())
        elif ln.strip():
            body.append(ln)
    if not body:
        raise ConfigError(f"{path}: no prediction rows")
    import io

    return pd.read_csv(io.StringIO("\n".join(body))), meta


def _scalar(v: str) -> Any:
    try:
        return float(v) if any(c in v for c in ".eE") else int(v)
    except ValueError:
        return v


def load_predictions(path: str | Path, rules: RuleSet) -> Predictions:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such prediction file")
    note_input(p)
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            df, meta = _read_csv(p)
        elif suffix in (".json", ".yaml", ".yml"):
            if suffix == ".json":
                data = json.loads(p.read_text(encoding="utf-8"))
            else:
                try:
                    import yaml  # type: ignore[import-untyped]
                except ImportError:
                    raise ConfigError(f"{p}: reading YAML needs PyYAML", "pip install pyyaml, or use the CSV/JSON format") from None
                data = yaml.safe_load(p.read_text(encoding="utf-8"))
            meta = data.get("meta", {}) if isinstance(data, dict) else {}
            ops = data.get("ops", []) if isinstance(data, dict) else data
            if not isinstance(ops, list):
                raise ConfigError(f"{p}: 'ops' must be a list")
            df = pd.DataFrame(ops)
        else:
            raise ConfigError(f"{p}: unknown prediction format {suffix!r}", "Use .csv, .json or .yaml")
    except (json.JSONDecodeError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot parse ({str(err).splitlines()[0]})") from None
    return Predictions(normalise(df, rules, str(p)), meta, str(p))


def normalise(df: pd.DataFrame, rules: RuleSet, where: str = "predictions") -> pd.DataFrame:
    if "op" not in df.columns:
        raise ConfigError(f"{where}: needs an 'op' column")
    df = df.copy()
    if "predicted_us" not in df.columns:
        if "predicted_total_us" in df.columns and "count_per_forward" in df.columns:
            df["predicted_us"] = df["predicted_total_us"] / df["count_per_forward"]
        else:
            raise ConfigError(f"{where}: needs predicted_us (or predicted_total_us with count_per_forward)")
    bad = pd.to_numeric(df["predicted_us"], errors="coerce").isna()
    if bad.any():
        row = int(np.nonzero(bad.to_numpy())[0][0]) + 1
        raise ConfigError(f"{where}: row {row} ({df['op'].iloc[row - 1]!r}) has no numeric predicted_us")
    out = pd.DataFrame({"name": df["op"].astype(str)})
    out["op"] = [rules.canonical_op(x) for x in out["name"]]
    out["layer_kind"] = df["layer_kind"].fillna("any").astype(str).str.lower() if "layer_kind" in df else "any"
    out["count_per_forward"] = pd.to_numeric(df["count_per_forward"], errors="coerce") if "count_per_forward" in df else np.nan
    out["predicted_us"] = pd.to_numeric(df["predicted_us"]).astype(float)
    for c in ("flops", "bytes", "comm_bytes"):
        out[c] = pd.to_numeric(df[c], errors="coerce") if c in df else np.nan
    out["bound"] = df["bound"].astype(str) if "bound" in df else ""
    out["source"] = df["source"].astype(str) if "source" in df else ""
    dup = out.duplicated(["op", "layer_kind"])
    if dup.any():
        r = out[dup].iloc[0]
        raise ConfigError(
            f"{where}: op {r['op']!r} (from {r['name']!r}) appears twice for layer kind {r['layer_kind']!r}", "Merge the rows or give each its layer_kind"
        )
    return out[COLUMNS]


def write_predictions(df: pd.DataFrame, meta: dict[str, Any], path: str | Path) -> None:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        head = "".join(f"# {k}: {v}\n" for k, v in meta.items())
        write_text(p, head + df.to_csv(index=False))
    elif suffix == ".json":
        from nsysparse.formatting import jsonable

        write_text(p, json.dumps(jsonable({"meta": meta, "ops": df}), indent=2) + "\n")
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError("writing YAML needs PyYAML", "pip install pyyaml, or write .csv/.json") from None
        from nsysparse.formatting import jsonable

        write_text(p, yaml.safe_dump(jsonable({"meta": meta, "ops": df}), sort_keys=False))
    else:
        raise ConfigError(f"{p}: unknown prediction format {suffix!r}", "Use .csv, .json or .yaml")
