"""`--inductor-provenance DIR`: Triton kernels classified by the ATen ops TorchInductor recorded for them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import corpus
import pytest

from nsysparse.analyses.context import AnalysisContext, StructureOptions
from nsysparse.errors import UsageError
from nsysparse.structure.inductor import inductor_names
from nsysparse.trace import Trace

PROVENANCE = "hf_llama_compile_prov_generate_bare"

# What each generic kernel computes (as Inductor records it), and the class the rule packs give that op list.
GENERIC = {
    "triton_per_fused_0": (["aten._to_copy", "aten.add", "aten.mean", "aten.mul", "aten.pow", "aten.rsqrt"], "norm"),
    "triton_poi_fused_1": (["aten.mul", "aten.silu", "aten.view"], "act"),
    "triton_poi_fused_2": (["aten.cat", "aten.cos", "aten.mul", "aten.neg", "aten.sin", "aten.slice"], "rope"),
    "triton_poi_fused_3": (["aten.index_copy", "aten.transpose"], "kv_cache"),
}


def write_output_code(folder: Path) -> Path:
    """A generated module as Inductor writes it with descriptive names off: the ATen ops sit only in the comments."""
    lines = ["def call(args):"]
    for name, (ops, _) in GENERIC.items():
        lines.append(f"    # Topologically Sorted Source Nodes: [x_{name[-1]}], Original ATen: [{', '.join(ops)}]")
        lines.append("    stream0 = get_raw_stream(0)")
        lines.append(f"    {name}.run(buf0, buf1, 4, stream=stream0)")
    out = folder / "torchinductor" / "model__0_inference_0.0" / "output_code.py"
    out.parent.mkdir(parents=True)
    out.write_text(textwrap.dedent("\n".join(lines)) + "\n")
    return folder


def generic_trace(builder, path: Path) -> Path:
    b = builder()
    b.gpu()
    t = 1_000_000
    for _ in range(3):
        for name in GENERIC:
            b.kernel(t, t + 2_000, name)
            t += 3_000
    return b.write(path)


def test_generic_kernels_get_classes_from_provenance(builder, tmp_path):
    trace = generic_trace(builder, tmp_path / "t.sqlite")
    prov = write_output_code(tmp_path / "debug")
    with Trace(trace) as t:
        plain = AnalysisContext(t).full_mapping.kernels
    with Trace(trace) as t:
        ctx = AnalysisContext(t, options=StructureOptions(inductor_provenance=str(prov)))
        k = ctx.full_mapping.kernels
        notes = ctx.full_mapping.notes
    assert set(plain["kernel_class"].astype(str)) == {"ew"}, "without provenance the generic names say nothing"
    got = dict(zip(k["short_name"].astype(str), k["kernel_class"].astype(str), strict=False))
    assert got == {name: cls for name, (_, cls) in GENERIC.items()}
    assert (k["short_name"].astype(str) == plain["short_name"].astype(str)).all(), "kernels keep their own names"
    assert any("12 kernels (4 distinct Triton kernels)" in n for n in notes)


def test_a_folder_of_another_compile_is_said(builder, tmp_path):
    trace = generic_trace(builder, tmp_path / "t.sqlite")
    other = tmp_path / "debug"
    out = other / "output_code.py"
    out.parent.mkdir()
    out.write_text("# Topologically Sorted Source Nodes: [a], Original ATen: [aten.add]\ntriton_poi_fused_99.run(a)\n")
    with Trace(trace) as t:
        notes = AnalysisContext(t, options=StructureOptions(inductor_provenance=str(other))).full_mapping.notes
    assert any("none of its 1 kernels is in this trace" in n for n in notes)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_bad_folder_is_one_line_naming_it(run, builder, tmp_path, make):
    trace = generic_trace(builder, tmp_path / "t.sqlite")
    folder = tmp_path / "debug"
    if make == "empty":
        folder.mkdir()
    with pytest.raises(UsageError, match="debug"):
        inductor_names(folder)
    res = run("ops", trace, "--inductor-provenance", folder, expect=None)
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and str(folder) in lines[0]


@pytest.mark.skipif(not (corpus.V2 / PROVENANCE / "provenance.tar.xz").exists(), reason="provenance fixture not present")
def test_real_provenance_gives_inductors_own_names(tmp_path):
    """On a real compile, the names rebuilt from the recorded ATen ops are the ones Inductor gave its kernels
    (up to the numeric suffix): every Triton kernel of the fixture, read independently from the trace's names."""
    trace, prov = corpus.load_provenance(PROVENANCE, tmp_path)
    names = inductor_names(prov)
    in_trace = set(corpus.kernels(trace)["name"])
    triton = {n for n in in_trace if n.startswith("triton_")}
    assert triton and triton <= set(names)
    assert {n: names[n].rsplit("_", 1)[0] for n in triton} == {n: n.rsplit("_", 1)[0] for n in triton}
