"""TorchInductor's own record of what each generated kernel computes (`--inductor-provenance DIR`).

With `TORCH_COMPILE_DEBUG=1` (or `torch._inductor.config.trace.enabled`), Inductor writes one folder per compiled
graph holding `output_code.py`: the generated module. Before every kernel launch in its `call()` it writes a
comment naming the FX nodes the kernel computes and the ATen ops they come from:

    # Topologically Sorted Source Nodes: [hidden_states_1, pow_1, variance, ...], Original ATen: [aten.add, aten.pow, aten.mean, aten.rsqrt, aten.mul]
    ...
    triton_per_fused_0.run(buf0, arg1_1, ...)

Kernel names carry those ATen ops only while `torch._inductor.config.triton.descriptive_names` is left at its
default; with it off, every kernel is `triton_poi_fused_0`, `triton_red_fused_1`, ... and only this file says what
it is. `inductor_names` reads every `output_code.py` under a folder and gives each Triton kernel the name Inductor's
default would have given it (`triton_<kind>_fused_<ops>`), which the rule packs then classify like any other.
"""

from __future__ import annotations

import re
from pathlib import Path

from nsysparse.errors import UsageError

_SOURCES = re.compile(r"#\s*Topologically Sorted Source Nodes:.*Original ATen:\s*\[([^\]]*)\]")
_LAUNCH = re.compile(r"^\s*(triton_(?:poi|red|per|tem)_\w+)\.run\(")
_KIND = re.compile(r"^triton_(poi|red|per|tem)_")
_CALL = re.compile(r"^\s*(?:\w+\s*=\s*)?(?:extern_kernels|torch\.ops)\.[\w.]+\(")  # a launch that is not Triton's
MAX_FILE_BYTES = 64 << 20
"""An output_code.py larger than this is not read (a generated module is a few MB at most)."""


def inductor_names(folder: str | Path) -> dict[str, str]:
    """Triton kernel name -> its descriptive name from the ATen ops Inductor records at its launches, over every
    `output_code.py` under `folder`. Inductor numbers kernels per compiled graph, so two graphs (forward and
    backward, a recompile, two runs in one debug folder) can each have a `triton_poi_fused_0`: a name whose
    recorded ops differ between files gives no class, and `provenance_notes` says so. Raises UsageError naming
    the folder when it holds no generated module or no kernel provenance at all."""
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"--inductor-provenance {root}: not a folder (pass the TorchInductor debug folder, TORCH_COMPILE_DEBUG=1)")
    files = sorted(p for p in root.rglob("output_code.py") if p.is_file())
    readable = [p for p in files if p.stat().st_size <= MAX_FILE_BYTES]
    if not readable:
        raise UsageError(f"--inductor-provenance {root}: no output_code.py under it (TorchInductor writes it with TORCH_COMPILE_DEBUG=1)")
    per_file = [_launch_ops(p) for p in readable]
    seen: dict[str, set[tuple[str, ...]]] = {}
    for found in per_file:
        for name, ops in found.items():
            seen.setdefault(name, set()).add(tuple(sorted(set(ops))))
    if not seen:
        raise UsageError(
            f"--inductor-provenance {root}: its {len(readable)} output_code.py record no ATen ops at kernel launches (older torch or AOTInductor output)"
        )
    return {name: descriptive(name, list(next(iter(ops)))) for name, ops in seen.items() if len(ops) == 1}


def provenance_notes(folder: str | Path, names: dict[str, str]) -> list[str]:
    """What the folder could not tell: kernel names its graphs use for different fusions, files too large to read."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("output_code.py") if p.is_file())
    notes = []
    big = sum(1 for p in files if p.stat().st_size > MAX_FILE_BYTES)
    if big:
        notes.append(f"--inductor-provenance: {big} output_code.py larger than {MAX_FILE_BYTES >> 20} MB not read")
    launched = set()
    for p in files:
        if p.stat().st_size <= MAX_FILE_BYTES:
            launched |= set(_launch_ops(p))
    ambiguous = sorted(launched - set(names))
    if ambiguous:
        notes.append(
            f"--inductor-provenance: {len(ambiguous)} kernel names stand for different fusions in different graphs "
            f"(e.g. {ambiguous[0]}); they keep the class of their own name (pass one graph's folder)"
        )
    return notes


def _launch_ops(path: Path) -> dict[str, list[str]]:
    """Kernel name -> the ATen ops recorded in the comment just before its launch, in one output_code.py. A comment
    applies to the next call only (an extern call such as extern_kernels.mm consumes its own comment)."""
    ops: dict[str, list[str]] = {}
    pending: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        m = _SOURCES.search(line)
        if m:
            pending = [_op_name(x) for x in m.group(1).split(",") if x.strip()]
            continue
        launch = _LAUNCH.match(line)
        if launch and pending:
            known = ops.setdefault(launch.group(1), [])
            known.extend(x for x in pending if x not in known)
            pending = []
        elif _CALL.match(line):
            pending = []
    return ops


def descriptive(kernel: str, aten_ops: list[str]) -> str:
    """`triton_<kind>_fused_<ops>` as Inductor names a fusion of these ATen ops (sorted, like its descriptive names)."""
    kind = _KIND.match(kernel)
    return f"triton_{kind.group(1) if kind else 'poi'}_fused_{'_'.join(sorted(set(aten_ops)))}_0"


def _op_name(text: str) -> str:
    """`aten._to_copy` -> `_to_copy`; `aten.mm.default` -> `mm`."""
    parts = text.strip().split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "aten" else parts[-1]
