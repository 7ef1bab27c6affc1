"""Every committed fixture against its manifest: GPU, kernels, NVTX steps, layers and op names."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from conftest import FIXTURE_NAMES, FIXTURES

from nsysparse.models.config import load_model
from nsysparse.rules import load_rules
from nsysparse.trace import info as trace_info
from nsysparse.trace import open_trace
from nsysparse.workload.config import run_from
from nsysparse.workload.run import build_manifest


def manifest(name):
    return json.loads((FIXTURES / name / "manifest.json").read_text())


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_matches_its_manifest(name):
    m = manifest(name)
    st = m["structure"]
    with open_trace(FIXTURES / name / "trace.sqlite") as t:
        assert t.count("kernels") > 0
        assert trace_info.gpu_name(t) == m["environment"]["gpu"]
        assert t.version.product.startswith("2025.3")
        if st["nvtx"] == "none":
            assert not t.has("nvtx"), "a --nvtx none fixture must carry no NVTX at all"
            return
        n = t.nvtx()
        texts = n["text"].astype(str)
        steps = [x for x in texts if re.fullmatch(st["step_name"].format(i=r"\d+"), x)]
        assert steps == [st["step_name"].format(i=i) for i in range(st["steps"])]
        if st["nvtx"] in ("layer", "op"):
            layers = Counter(x for x in texts if re.fullmatch(r"layer_\d+_(dense|moe|mtp)", x))
            reps = 1 if m["run"]["cuda_graph"] else st["steps"]
            assert layers == Counter({name: reps for name in st["layer_names"]})
        if st["nvtx"] == "op":
            vocab = set(load_rules().ops)
            ops = set(texts) - set(steps) - set(layers) - {"host_gap", "None", ""}
            ops = {o for o in ops if not o.startswith("cub::")}
            assert ops <= vocab, ops - vocab
            expected = {o for seq in st["op_sequence"].values() for o in seq} | set(st["other_ops"])
            assert ops == expected
        if m["injected"]["gaps"]:
            assert int((texts == "host_gap").sum()) == m["injected"]["gaps"]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_manifest_is_what_the_generator_plans_now(name):
    """The generator takes a ModelSpec now; planned from the fixture's own (older-format) manifest, a run
    must expect exactly the structure the fixture was captured with and checked against above, with the
    same run settings (dtype and RMSNorm epsilon moved from the model block to the run)."""
    m = manifest(name)
    spec, run = run_from(m)
    assert spec == load_model(m["preset"]).spec
    new = build_manifest(spec, run, m["environment"], m["grouped_gemm"])
    assert new["structure"] == m["structure"]
    assert new["run"] == {**m["run"], "dtype": m["model"]["dtype"], "rms_eps": m["model"]["rms_eps"]}
    for key in ("injected", "tokens_per_step", "environment", "grouped_gemm"):
        assert new[key] == m[key], key
    # the config.json beside it (what `python -m nsysparse.workload.run` re-runs) gives the same run
    config = json.loads((FIXTURES / name / "config.json").read_text())
    assert run_from(config) == (spec, run)


def test_fixture_budget():
    sizes = {p.parent.name: p.stat().st_size for p in FIXTURES.glob("*/trace.sqlite")}
    assert sizes and max(sizes.values()) <= 5 * 2**20, sizes
    assert sum(sizes.values()) <= 30 * 2**20


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_never_leaks_scrubbed_fields(run, name):
    path = FIXTURES / name / "trace.sqlite"
    for cmd in (["info", "-f", "json"], ["info"], ["kernels", "--limit", "3"]):
        run(*cmd[:1], path, *cmd[1:])  # the run fixture asserts no secret (nsysparse-scrubbed) is printed
