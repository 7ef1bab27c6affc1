"""Fixture corpus v2: real HuggingFace transformers traces (whole process), each a bare capture plus an NVTX twin.

Every check reads the SQLite export with the standard library (through tests/corpus.py) and compares with the
manifest's protocol: counts are derived from the protocol (calls, tokens, iterations), not copied from output.
"""

from __future__ import annotations

import json
import re
import sqlite3

import corpus  # tests/ is on sys.path through conftest.py
import pytest
from nsysbuilder import TraceBuilder

lzma = pytest.importorskip("lzma")

NAMES = corpus.fixture_names()
SENTINEL = "nsysparse-scrubbed"


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    dest = tmp_path_factory.mktemp("corpus_v2")
    cache: dict[str, corpus.V2Fixture] = {}

    def get(name: str) -> corpus.V2Fixture:
        if name not in cache:
            cache[name] = corpus.load(name, dest)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def labels(unpacked):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = corpus.twin_labels(unpacked(name).twin)
        return cache[name]

    return get


def protocol_counts(m: dict) -> tuple[str, int, int]:
    """(call range text, calls, top-level forwards) from the manifest's run protocol."""
    p = m["protocol"]
    if p["protocol"] == "generate":
        calls = p["warmup_calls"] + p["measured_calls"]
        return "generate", calls, calls * p["new_tokens"]  # each call: 1 prefill + (new_tokens - 1) decode forwards
    calls = p["warmup_iters"] + p["measured_iters"]
    return "train_step", calls, calls


def scalar(path, sql, *args):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return con.execute(sql, args).fetchone()[0]


def test_corpus_is_there():
    assert {"hf_llama_generate", "hf_qwen3moe_generate", "hf_llama_train", "hf_llama_compile_generate"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_unpacks_beside_nothing(unpacked, name):
    fx = unpacked(name)
    for kind, path in (("bare", fx.bare), ("twin", fx.twin)):
        committed = corpus.V2 / f"{name}_{kind}"
        assert committed not in path.parents and sorted(p.name for p in committed.iterdir()) == ["manifest.json", "trace.sqlite.xz"]
        assert path.stat().st_size == (fx.manifest if kind == "twin" else fx.bare_manifest)["sqlite_bytes"]
        assert path.stat().st_size <= 5 * 2**20


@pytest.mark.parametrize("name", NAMES)
def test_kernel_table_exists(unpacked, name):
    fx = unpacked(name)
    for path in (fx.bare, fx.twin):
        assert scalar(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'CUPTI_ACTIVITY_KIND_KERNEL'") == 1
        assert scalar(path, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL") > 0


@pytest.mark.parametrize("name", NAMES)
def test_bare_has_no_nvtx(unpacked, name):
    fx = unpacked(name)
    has = scalar(fx.bare, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'NVTX_EVENTS'")
    assert not has or scalar(fx.bare, "SELECT count(*) FROM NVTX_EVENTS") == 0
    assert corpus.nvtx_ranges(fx.bare).empty
    assert corpus.nvtx_ranges(fx.bare, all_domains=True).empty
    assert fx.bare_manifest["truth"]["nvtx"] == "none" and "--trace=cuda " in fx.bare_manifest["nsys"]["command"]
    twin_mode = "--nvtx modules" if fx.manifest["protocol"].get("compile_backend") is None and fx.manifest["protocol"].get("compile") else "--nvtx functions"
    assert "--nvtx none" in fx.bare_manifest["nsys"]["command"] and twin_mode in fx.manifest["nsys"]["command"]


@pytest.mark.parametrize("name", NAMES)
def test_twin_kernel_sequences_equal_bare(unpacked, name):
    """Label transfer by launch order: per stream, the kernel names in start order are the bare's."""
    fx = unpacked(name)
    bare, twin = corpus.kernel_sequences(fx.bare), corpus.kernel_sequences(fx.twin)
    assert set(bare) == set(twin)
    measured = {str(s): bare[s] == twin[s] for s in bare}
    declared = fx.manifest["twin_match"]["per_stream_start_order_equal"]
    assert measured == declared, "the manifest must say which streams differ"
    busiest = max(bare, key=lambda s: len(bare[s]))
    assert bare[busiest] == twin[busiest], "the compute stream must always match"
    if all(declared.values()):
        kb, kt = corpus.kernels(fx.bare), corpus.kernels(fx.twin)
        assert kb["demangled"].tolist() == kt["demangled"].tolist()  # launch order, full names
        assert fx.manifest["twin_match"]["launch_order_equal"]
    else:
        assert "differs" in fx.manifest["twin_match"]["note"]


@pytest.mark.parametrize("name", NAMES)
def test_call_ranges_match_protocol(unpacked, name):
    fx = unpacked(name)
    text, calls, _ = protocol_counts(fx.manifest)
    r = corpus.nvtx_ranges(fx.twin)
    assert int((r["text"] == text).sum()) == calls == fx.manifest["expected"]["calls"]
    assert int(r["text"].isin(corpus.CALL_RANGES).sum()) == calls  # and none of the other kind


@pytest.mark.parametrize("name", NAMES)
def test_forward_ranges_match_protocol(unpacked, name):
    fx = unpacked(name)
    text, calls, forwards = protocol_counts(fx.manifest)
    r = corpus.nvtx_ranges(fx.twin)
    fwd = r[r["text"] == corpus.FORWARD_RANGE]
    assert len(fwd) == forwards == fx.manifest["expected"]["forwards"]
    per_call = [int(((fwd["start_ns"] >= c.start_ns) & (fwd["end_ns"] <= c.end_ns)).sum()) for c in r[r["text"] == text].itertuples()]
    assert per_call == [forwards // calls] * calls
    if fx.manifest["protocol"]["protocol"] == "generate":
        assert fx.manifest["expected"]["prefill_forwards"] == calls
        assert fx.manifest["expected"]["decode_forwards"] == forwards - calls
        assert fx.manifest["measured"]["tokens_per_call"] == [fx.manifest["protocol"]["new_tokens"]] * calls


@pytest.mark.parametrize("name", NAMES)
def test_twin_labels(labels, unpacked, name):
    fx = unpacked(name)
    m = fx.manifest
    _, calls, forwards = protocol_counts(m)
    lab = labels(name)
    assert lab["kernel_index"].tolist() == list(range(len(lab)))
    assert len(lab) == scalar(fx.twin, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL")
    assert sorted(set(lab["forward"]) - {-1}) == list(range(forwards)), "every forward launches kernels"
    assert sorted(set(lab["call"]) - {-1}) == list(range(calls))
    inside = lab[lab["call"] >= 0]
    assert inside["call"].is_monotonic_increasing and inside["kernel_index"].is_monotonic_increasing
    fwd = lab[lab["forward"] >= 0]
    assert (fwd["module"] != "").all(), "every kernel in a forward has a module"
    assert (fwd["phase"] == "forward").all() and (lab.loc[lab["forward"] < 0, "phase"] != "forward").all()
    outside = lab[lab["forward"] < 0]
    # outside forwards, only the training twin's backward module ranges (`<module>.backward`) label kernels
    assert (outside["module"].eq("") | (outside["phase"].eq("backward") & outside["module"].str.endswith(".backward"))).all()
    assert (lab.loc[lab["call"] < 0, "forward"] == -1).all()
    if m["protocol"]["protocol"] == "train":
        bwd = lab[lab["phase"] == "backward"]
        assert bwd["module"].str.endswith(".backward").mean() > 0.9, "backward kernels carry their module's backward range"
    per_call = forwards // calls
    n_layers = m["expected"]["layers"]["per_forward"]
    layers_of = fwd[fwd["layer"] >= 0].groupby("forward")["layer"].agg(lambda s: sorted(set(s)))
    # eager forwards: kernels in every decoder layer; compiled forwards carry no module ranges inside
    compiled = m["protocol"].get("compile", False)
    eager = [f for f in range(forwards) if not compiled or f % per_call == 0]  # with compile only the prefills are eager
    assert all(layers_of.get(f) == list(range(n_layers)) for f in eager)
    if compiled:
        decode = fwd[fwd["forward"] % per_call != 0]
        assert len(decode) and (decode["module"] == corpus.FORWARD_RANGE).all() and (decode["layer"] == -1).all()
    if m["protocol"]["protocol"] == "train":
        for c in range(calls):
            phases = set(lab.loc[lab["call"] == c, "phase"])
            assert {"forward", "backward", "optimizer_step"} <= phases
        back = lab[lab["phase"] == "backward"]
        assert back["module"].str.endswith(".backward").mean() > 0.95 and (back["forward"] == -1).all()


@pytest.mark.parametrize("name", NAMES)
def test_twin_ranges_are_modules_or_markers(unpacked, name):
    """Default-domain ranges are the twin's own: markers, `forward`, or a named_modules() path."""
    fx = unpacked(name)
    r = corpus.nvtx_ranges(fx.twin)
    markers = set(corpus.CALL_RANGES) | set(corpus.PHASE_RANGES)
    others = set(r["text"]) - markers
    assert others and all(re.fullmatch(r"(model|lm_head)(\.[A-Za-z0-9_]+)*", t) for t in others), sorted(others)[:5]
    if fx.manifest["protocol"]["protocol"] == "generate":
        assert (r["text"] == "generate").sum() and not r["text"].isin(["train_step", "backward", "optimizer_step"]).any()


@pytest.mark.parametrize("name", NAMES)
def test_layers_follow_the_config(labels, unpacked, name):
    """Dense layers run mlp.gate_proj/up_proj/down_proj, MoE layers mlp.gate and mlp.experts (read off the twin)."""
    fx = unpacked(name)
    layers = fx.manifest["expected"]["layers"]
    lab = labels(name)
    mods = set(lab["module"])
    for i in layers["dense"]:
        assert f"model.layers.{i}.mlp.down_proj" in mods and not any(x.startswith(f"model.layers.{i}.mlp.experts") for x in mods)
    for i in layers["moe"]:
        assert f"model.layers.{i}.mlp.gate" in mods and any(x.startswith(f"model.layers.{i}.mlp.experts") for x in mods)
    assert sorted(layers["dense"] + layers["moe"]) == list(range(layers["per_forward"]))
    cfg = fx.manifest["model"]["config"]
    assert layers["per_forward"] == cfg["num_hidden_layers"]
    if layers["moe"]:
        assert layers["dense"] == sorted(cfg["mlp_only_layers"]) and cfg["decoder_sparse_step"] == 1
    else:
        assert "num_experts" not in cfg and "num_local_experts" not in cfg


def per_forward(df):
    return df[df["forward"] >= 0].groupby("forward").size()


@pytest.mark.parametrize("name", NAMES)
def test_bare_labels_transfer(labels, unpacked, name):
    fx = unpacked(name)
    twin = labels(name)
    matched = all(fx.manifest["twin_match"]["per_stream_start_order_equal"].values())
    if not matched:
        with pytest.raises(ValueError, match="differ"):
            corpus.bare_labels(fx.bare, fx.twin)
    bare = corpus.bare_labels(fx.bare, fx.twin, strict=matched)
    if matched:
        assert per_forward(bare).tolist() == per_forward(twin).tolist()
        assert bare["name"].tolist() == twin["name"].tolist()
    else:
        good = [s for s, ok in fx.manifest["twin_match"]["per_stream_start_order_equal"].items() if ok]
        tw, ba = twin[twin["stream"].astype(str).isin(good)], bare[bare["stream"].astype(str).isin(good)]
        assert per_forward(ba).tolist() == per_forward(tw).tolist()


@pytest.mark.parametrize("name", NAMES)
def test_manifest_facts_and_privacy(unpacked, name):
    fx = unpacked(name)
    for m in (fx.manifest, fx.bare_manifest):
        sw = m["software"]
        assert sw["torch"] and sw["transformers"] and sw["cuda"] and sw["gpu"] and m["nsys"]["version"]
        assert m["model"]["model_class"].endswith("ForCausalLM") and m["model"]["config"]["num_hidden_layers"] > 0
        assert "--capture-range" not in m["nsys"]["command"] and m["nsys"]["command"].startswith("nsys profile ")
        assert m["nsys"]["workload_exit"] == 0
        text = json.dumps(m)
        assert not re.search(r"/home/|/root|/tmp/|[A-Z_]{3,}=", text), "no paths or environment variables in a manifest"
        assert "hostname" not in text.lower() and "user_name" not in text.lower()


@pytest.mark.parametrize("name", NAMES)
def test_traces_are_scrubbed(unpacked, name):
    fx = unpacked(name)
    for path in (fx.bare, fx.twin):
        assert scalar(path, "SELECT value FROM TARGET_INFO_SYSTEM_ENV WHERE name = 'Hostname'") == SENTINEL
        assert scalar(path, "SELECT count(*) FROM META_DATA_CAPTURE WHERE name LIKE '%ENVIRONMENT_VARIABLE%' AND value != ?", SENTINEL) == 0
        assert scalar(path, "SELECT count(*) FROM META_DATA_EXPORT WHERE name IN ('EXPORT_HOST', 'EXPORT_USER') AND value != ?", SENTINEL) == 0
        assert scalar(path, "SELECT count(*) FROM StringIds WHERE instr(value, 'PATH=') > 0 OR instr(value, 'HOME=') > 0") == 0


# -- twin_labels on a trace whose answer is known ------------------------------------------------------------


def test_twin_labels_small(tmp_path):
    b = TraceBuilder("2024.5")
    b.push(0, 10_000, "generate")
    b.push(100, 4_000, "forward")
    b.push(200, 3_000, "model")
    b.push(300, 1_500, "model.layers.0")
    b.push(400, 900, "model.layers.0.self_attn.q_proj")
    b.push(1_600, 2_900, "model.layers.1")
    b.push(5_000, 9_000, "forward")
    b.push(20_000, 30_000, "train_step")
    b.push(21_000, 25_000, "backward")
    b.push(450, 600, "cub::DeviceScan::InclusiveScan", domain=1, registered=True)  # a library's range: not truth
    k = []
    k.append(b.kernel(50_000, 50_100, "void a()", api_start=500))  # q_proj of layer 0, forward 0
    k.append(b.kernel(50_200, 50_300, "void b()", api_start=1_000))  # layer 0 itself
    k.append(b.kernel(50_400, 50_500, "void c()", api_start=2_000))  # layer 1
    k.append(b.kernel(50_600, 50_700, "void d()", api_start=3_500))  # root module's own code
    k.append(b.kernel(50_800, 50_900, "void e()", api_start=4_500))  # generate, between forwards
    k.append(b.kernel(51_000, 51_100, "void f()", api_start=6_000))  # forward 1
    k.append(b.kernel(51_200, 51_300, "void g()", api_start=22_000, tid=101))  # backward, launched from another thread
    k.append(b.kernel(51_400, 51_500, "void h()", api_start=40_000))  # outside everything
    path = b.write(tmp_path / "t.sqlite")
    lab = corpus.twin_labels(path)
    assert lab["name"].tolist() == list("abcdefgh")
    assert lab["forward"].tolist() == [0, 0, 0, 0, -1, 1, -1, -1]
    assert lab["call"].tolist() == [0, 0, 0, 0, 0, 0, 1, -1]
    assert lab["module"].tolist() == ["model.layers.0.self_attn.q_proj", "model.layers.0", "model.layers.1", "forward", "", "forward", "", ""]
    assert lab["layer"].tolist() == [0, 0, 1, -1, -1, -1, -1, -1]
    assert lab["phase"].tolist() == ["forward"] * 4 + ["", "forward", "backward", ""]
    bare = TraceBuilder("2024.5")
    for i, name in enumerate("abcdefgh"):
        bare.kernel(60_000 + 200 * i, 60_100 + 200 * i, f"void {name}()")
    moved = corpus.bare_labels(bare.write(tmp_path / "b.sqlite"), path)
    assert moved["forward"].tolist() == lab["forward"].tolist() and moved["module"].tolist() == lab["module"].tolist()
    bare2 = TraceBuilder("2024.5")
    bare2.kernel(1, 2, "void z()")
    with pytest.raises(ValueError):
        corpus.bare_labels(bare2.write(tmp_path / "b2.sqlite"), path)
