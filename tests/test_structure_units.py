"""Unit tests on synthetic traces: NVTX tree, steps, layers, graph nodes, templates, rule files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsysparse.errors import RuleError
from nsysparse.rules import load_rules
from nsysparse.rules.model import RuleSet
from nsysparse.structure.mapping import map_trace
from nsysparse.structure.nvtx import build_tree
from nsysparse.structure.parse import Parser
from nsysparse.structure.steps import infer_cuts
from nsysparse.trace import open_trace

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"


# ---- NVTX tree ------------------------------------------------------------------------------------
@st.composite
def nested_ranges(draw):
    """Properly nested ranges on a few threads, built by random push/pop."""
    rows = []
    for tid in range(draw(st.integers(1, 3))):
        t, stack = 0, []
        for _ in range(draw(st.integers(0, 25))):
            t += draw(st.integers(0, 5))
            if stack and draw(st.booleans()):
                s = stack.pop()
                rows.append((s, t, tid))
            else:
                stack.append(t)
        while stack:
            t += draw(st.integers(0, 5))
            rows.append((stack.pop(), t, tid))
    return pd.DataFrame(rows, columns=["start_ns", "end_ns", "global_tid"])


@settings(max_examples=150, deadline=None)
@given(nested_ranges(), st.lists(st.tuples(st.integers(0, 2), st.integers(-2, 140)), max_size=30))
def test_innermost_matches_brute_force(ranges, queries):
    tree = build_tree(ranges.assign(text=""))
    f = tree.frame
    q_tid = np.array([q[0] for q in queries], dtype=np.int64)
    q_ts = np.array([q[1] for q in queries], dtype=np.int64)
    got = tree.innermost(q_tid, q_ts)
    for (tid, ts), pos in zip(queries, got):
        f0 = ranges[ranges["end_ns"] > ranges["start_ns"]]  # zero-length ranges are ignored by design
        cand = f0[(f0["global_tid"] == tid) & (f0["start_ns"] <= ts) & (f0["end_ns"] >= ts)]
        if len(cand) == 0:
            assert pos == -1
        else:
            # innermost = latest start, shortest on ties
            best = cand.sort_values(["start_ns", "end_ns"], ascending=[True, False]).iloc[-1]
            row = f.iloc[pos]
            assert (row["start_ns"], row["end_ns"]) == (best["start_ns"], best["end_ns"])


def test_nearest_flagged_stops_at_layers():
    df = pd.DataFrame({"start_ns": [0, 10, 20, 30], "end_ns": [100, 90, 80, 70], "global_tid": 1, "text": ["model", "layer_0", "attn", "q"]})
    tree = build_tree(df)
    is_layer = (tree.frame["text"] == "layer_0").to_numpy()
    is_op = ~is_layer & (tree.frame["text"] != "model").to_numpy()
    near_op = tree.nearest_flagged(is_op, stop=is_layer)
    pos_q = int(np.nonzero(tree.frame["text"] == "q")[0][0])
    assert tree.frame["text"].iloc[near_op[pos_q]] == "q"
    pos_layer = int(np.nonzero(is_layer)[0][0])
    assert near_op[pos_layer] == -1


# ---- step inference -------------------------------------------------------------------------------
def kernel_stream(steps: int, per_step: list[int], gap_in: int, gap_between: int):
    start, end, codes, t = [], [], [], 0
    for _ in range(steps):
        for c in per_step:
            start.append(t)
            end.append(t + 1_000)
            codes.append(c)
            t += 1_000 + gap_in
        t += gap_between
    return np.array(start), np.array(end), np.array(codes)


def test_steps_from_idle_gaps():
    s, e, c = kernel_stream(6, [1, 2, 3, 2, 4], 2_000, 1_000_000)
    cuts, method, conf, _why = infer_cuts(s, e, c)
    assert method == "inferred-gaps" and list(cuts) == [0, 5, 10, 15, 20, 25]
    assert conf > 0.9


def test_steps_from_periodicity_without_gaps():
    s, e, c = kernel_stream(8, [7, 1, 2, 3, 1, 2, 3, 9], 3_000, 0)
    cuts, method, _conf, _why = infer_cuts(s, e, c)
    assert method == "inferred-period"
    assert np.all(np.diff(cuts) == 8)


def test_no_steps_in_noise():
    rng = np.random.default_rng(0)
    s = np.cumsum(rng.integers(100, 5_000, 300))
    _cuts, method, conf, why = infer_cuts(s, s + 50, rng.integers(0, 50, 300))
    assert method == "none" and conf == 0.0 and why


# ---- mapping on synthetic traces ---------------------------------------------------------------
def llama_layer(b, t0, tid=100, stream=7, nvtx=True, layer=0):
    """Kernels of one Llama-like decode layer as our eager generator launches them."""
    seq = [
        ("vectorized_layer_norm_kernel", "void at::native::(anonymous)::vectorized_layer_norm_kernel<float>(int)", "attn_norm"),
        ("nvjet_sm90_tst_64x8_TNT", "nvjet_sm90_tst_64x8_TNT", "q_proj"),
        ("nvjet_sm90_tst_64x8_TNT", "nvjet_sm90_tst_64x8_TNT", "k_proj"),
        ("nvjet_sm90_tst_64x8_TNT", "nvjet_sm90_tst_64x8_TNT", "v_proj"),
    ]
    ew = ("elementwise_kernel", "void at::native::elementwise_kernel<128, 4, BinaryFunctor<mul>>()", "rope")
    cat = ("CatArrayBatchedCopy", "void at::native::CatArrayBatchedCopy<int>()", "rope")
    seq += [ew, ew, cat, ew, ew, ew, ew, cat, ew, ew]
    cp = ("elementwise_kernel", "void at::native::elementwise_kernel<128, 4, gpu_kernel_impl_nocast<at::native::direct_copy_kernel_cuda()>>()", "kv_cache")
    seq += [
        cp,
        cp,
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_x", "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_x", "fmha"),
        ("nvjet_sm90_tst_64x8_TNT", "nvjet_sm90_tst_64x8_TNT", "o_proj"),
        ("vectorized_elementwise_kernel", "void at::native::vectorized_elementwise_kernel<8, CUDAFunctor_add>()", "o_proj"),
        ("vectorized_layer_norm_kernel", "void at::native::(anonymous)::vectorized_layer_norm_kernel<float>(int)", "ffn_norm"),
        ("nvjet_sm90_tst_128x16_TNT", "nvjet_sm90_tst_128x16_TNT", "mlp_up"),
        ("elementwise_kernel", "void at::native::elementwise_kernel<128,4, silu_kernel()>()", "mlp_act"),
        ("elementwise_kernel", "void at::native::elementwise_kernel<128,4,BinaryFunctor<mul>>()", "mlp_act"),
        ("nvjet_sm90_tst_64x16_splitK_TNT", "nvjet_sm90_tst_64x16_splitK_TNT", "mlp_down"),
        ("splitKreduce_kernel", "void cublasLt::splitKreduce_kernel<int>()", "mlp_down"),
        ("vectorized_elementwise_kernel", "void at::native::vectorized_elementwise_kernel<8, CUDAFunctor_add>()", "mlp_down"),
    ]
    t = t0
    ops = []
    last_api_end = t
    if nvtx:
        b.push(t - 500, None, f"layer_{layer}_dense", tid=tid)
    for short, name, op in seq:
        if nvtx:
            b.push(t - 400, t - 100, op, tid=tid)
        b.kernel(t + 50_000, t + 51_000, name, short=short, api_start=t - 300, api_end=t - 200, tid=tid, stream=stream)
        last_api_end = t - 200
        ops.append(op)
        t += 1_000
    if nvtx:
        rows = b.rows["NVTX_EVENTS"]
        rows[max(i for i, r in enumerate(rows) if r["text"] == f"layer_{layer}_dense")]["end"] = last_api_end + 10
    return t, ops


def build_steps(builder, tmp_path, steps=3, layers=2, nvtx=True, gap=2_000_000):
    b = builder("2024.5")
    b.gpu()
    t = 1_000_000
    truth = []
    for s in range(steps):
        s0 = t
        for layer in range(layers):
            t, ops = llama_layer(b, t, nvtx=nvtx, layer=layer)
            truth += ops
        if nvtx:
            b.push(s0 - 1_000, t, f"forward_{s}")
        t += gap
    return b.write(tmp_path / "syn.sqlite"), truth


@pytest.mark.parametrize("nvtx", [True, False])
def test_synthetic_layers_named_by_nvtx_or_template(builder, tmp_path, nvtx):
    path, truth = build_steps(builder, tmp_path, nvtx=nvtx)
    with open_trace(path) as t:
        m = map_trace(t)
    assert len(m.steps) == 3
    assert m.layers.groupby("step").size().tolist() == [2, 2, 2]
    assert m.kernels["op"].astype(str).tolist() == truth
    assert set(m.kernels["source"].astype(str)) == ({"nvtx"} if nvtx else {"template"})


def test_container_ranges_and_nested_layer_names_are_not_ops(builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    b.push(0, 100_000, "forward_0")
    b.push(100, 90_000, "model_forward")  # contains the layer: a container, not an op
    b.push(200, 80_000, "model.layers.3")
    b.push(300, 70_000, "model.layers.3.self_attn")  # nested layer-like name: an op named self_attn
    b.kernel(200_000, 201_000, "void flash::flash_fwd_kernel<T>()", short="flash_fwd_kernel", api_start=400, api_end=500)
    b.kernel(202_000, 203_000, "nvjet_sm90_tst_64x8_TNT", api_start=85_000, api_end=85_100)  # in model_forward only
    path = b.write(tmp_path / "c.sqlite")
    with open_trace(path) as t:
        m = map_trace(t)
    k = m.kernels
    assert k["op"].astype(str).tolist() == ["self_attn", "gemm"]
    assert k["source"].astype(str).tolist() == ["nvtx", "class"]
    assert k["layer_name"].astype(str).tolist()[0] == "model.layers.3"


def test_framework_op_ranges_are_neither_steps_nor_layers(builder, tmp_path):
    """emit_nvtx / FSDP ranges ("flash_attn::_flash_attn_forward, op_id = 7", "FSDP::pre_forward (blocks.3)")
    carry step and layer words but are ops; their op_id/seq decorations are not part of the op name."""
    b = builder("2024.5")
    b.gpu()
    for i in range(4):
        t0 = i * 1_000_000
        b.push(t0, t0 + 200_000, f"FSDP::pre_forward (blocks.{i}._checkpoint_wrapped_module)")
        b.push(t0 + 10, t0 + 100_000, f"flash_attn::_flash_attn_forward, op_id = {100 + i}, sizes = [[2, 4]]")
        b.kernel(t0 + 300_000, t0 + 600_000, "void flash::flash_fwd_kernel<T>()", short="flash_fwd_kernel", api_start=t0 + 20, api_end=t0 + 30)
        b.push(t0 + 110_000, t0 + 150_000, f"aten::addmm, seq = {i}, op_id = {200 + i}")
        b.kernel(t0 + 610_000, t0 + 700_000, "nvjet_sm90_tst_64x8_TNT", api_start=t0 + 120_000, api_end=t0 + 120_100)
    path = b.write(tmp_path / "f.sqlite")
    with open_trace(path) as t:
        m = map_trace(t)
    assert m.step_source != "nvtx" and m.layer_source != "nvtx"
    assert set(m.kernels["op"].astype(str)) == {"flash_attn_flash_attn_forward", "aten_addmm"}


def test_library_nvtx_domains_are_ignored(builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    b.push(0, 100_000, "forward_0")
    b.push(10, 90_000, "dispatch")
    b.push(20, 80_000, "cub::DeviceRadixSort::SortPairs", domain=1)
    b.domain(1, "CCCL")
    b.kernel(
        200_000, 201_000, "void at_cuda_detail::cub::DeviceRadixSortOnesweepKernel<int>()", short="DeviceRadixSortOnesweepKernel", api_start=30, api_end=40
    )
    path = b.write(tmp_path / "d.sqlite")
    with open_trace(path) as t:
        m = map_trace(t)
    assert m.kernels["op"].astype(str).tolist() == ["dispatch"]


def test_graph_node_kernels_take_capture_time_ranges(builder, tmp_path):
    """Replayed node kernels get the layer/op ranges open when their node was created at capture."""
    b = builder("2024.5", graph_mode="Node")
    b.gpu()
    b.push(1_000, 9_000, "layer_0_moe")
    b.push(1_100, 2_000, "combine")
    for i in range(2):  # capture-time creation of nodes 1, 2 (original ids), instantiated as 101, 102
        b.add(
            "CUDA_GRAPH_NODE_EVENTS",
            start=1_500 + i,
            end=1_500 + i,
            eventClass=77,
            globalTid=(1 << 48) | (100 << 24) | 100,
            nameId=b.sid("Graph Node Creation"),
            graphNodeId=i + 1,
            originalGraphNodeId=None,
        )
        b.add(
            "CUDA_GRAPH_NODE_EVENTS",
            start=20_000 + i,
            end=20_000 + i,
            eventClass=77,
            globalTid=(1 << 48) | (100 << 24) | 100,
            nameId=b.sid("Graph Node Creation"),
            graphNodeId=101 + i,
            originalGraphNodeId=i + 1,
        )
    for step in range(2):
        t0 = 100_000 * (step + 1)
        b.push(t0, t0 + 10_000, f"forward_{step}")
        corr = b.api(t0 + 100, t0 + 200, "cudaGraphLaunch_v10000")
        for i in range(2):
            b.kernel(
                t0 + 20_000 + i * 1_000,
                t0 + 20_500 + i * 1_000,
                "void at::native::indexFuncLargeIndex<float>()",
                short="indexFuncLargeIndex",
                corr=corr,
                graph_node=101 + i,
            )
    orig_schema = b._schema

    def schema():
        s = orig_schema()
        s["CUDA_GRAPH_NODE_EVENTS"] = ["start", "end", "eventClass", "globalTid", "nameId", "graphNodeId", "originalGraphNodeId"]
        return s

    b._schema = schema
    path = b.write(tmp_path / "g.sqlite")
    with open_trace(path) as t:
        m = map_trace(t)
    k = m.kernels
    assert k["step"].tolist() == [0, 0, 1, 1]
    assert set(k["op"].astype(str)) == {"combine"} and set(k["source"].astype(str)) == {"nvtx"}
    assert len(m.layers) == 2 and set(m.layers["layer_kind"]) == {"moe"}


def test_public_traces_never_crash():
    from conftest import PUBLIC

    if not PUBLIC.exists():
        pytest.skip("public traces not available")
    for p in sorted(PUBLIC.glob("*/*.sqlite")):
        with open_trace(p) as t:
            if not t.has("kernels"):
                continue
            m = map_trace(t)
            assert len(m.kernels) == t.count("kernels") or len(m.kernels) < t.count("kernels")
            assert m.notes or m.step_source == "nvtx"


def test_public_traces_give_whole_layers_and_no_mtp():
    """Third-party traces (none of them a model with an MTP block): layers per step are whole numbers, and no
    layer is called MTP (the 2-GPU video-diffusion training trace once gave "mtp 1.48, dense 0.48")."""
    from conftest import PUBLIC

    from nsysparse.analyses.context import AnalysisContext
    from nsysparse.analyses.layers import layer_report

    if not PUBLIC.exists():
        pytest.skip("public traces not available")
    seen = 0
    for p in sorted(PUBLIC.glob("*/*.sqlite")):
        with AnalysisContext.open(p) as ctx:
            if not ctx.trace.has("kernels"):
                continue
            kinds = layer_report(ctx).layer_kinds
        seen += 1
        assert all(float(n).is_integer() for n in kinds.values()), (p.name, kinds)
        assert not any(k.startswith("mtp") for k in kinds), (p.name, kinds)
    assert seen >= 5


# ---- templates and rule files -------------------------------------------------------------------
def test_parser_longest_match_and_mtp():
    rs = load_rules()
    p = Parser(rs)
    c = {k: v for k, v in p.codes.items()}
    layer = [
        "norm",
        "gemm",
        "gemm",
        "gemm",
        "ew",
        "ew",
        "copy",
        "ew",
        "ew",
        "ew",
        "ew",
        "copy",
        "ew",
        "ew",
        "copy",
        "copy",
        "fmha",
        "gemm",
        "ew",
        "norm",
        "gemm",
        "act",
        "ew",
        "gemm",
        "splitk",
        "ew",
    ]
    head = ["norm", "gemm", "reduce"]
    seq = "".join(c[x] for x in ["gather", *layer, *layer, *head])
    segs = p.parse(seq)
    assert [s.role for s in segs] == ["prelude", "layer", "layer", "head"]
    assert [s.kind for s in segs if s.role == "layer"] == ["dense", "dense"]


def write_pack(tmp_path, body):
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "vocabulary.toml").write_text((RULES_DIR / "vocabulary.toml").read_text())
    (d / "x.toml").write_text(body)
    return d


@pytest.mark.parametrize(
    "body,needle",
    [
        ('schema_version = 2\npack = "x"\n', "schema_version must be 1"),
        ('schema_version = 1\npack = "x"\n[[classes]]\nid = "x.a"\nclass = "gemm"\nshort = "(unclosed"\n', "x.toml:6 (x.a): invalid short regex"),
        ('schema_version = 1\npack = "x"\n[[classes]]\nid = "x.a"\nclass = "warp"\nshort = "a"\n', "class 'warp' is not declared"),
        (
            'schema_version = 1\npack = "x"\n[[classes]]\nid = "x.a"\nclass = "gemm"\nshort = "a"\n[[classes]]\nid = "x.a"\nclass = "gemm"\nshort = "b"\n',
            "duplicate rule id",
        ),
        ('schema_version = 1\npack = "x"\n[[classes]]\nid = "x.a"\nclass = "gemm"\nshort = "a"\nbogus = 1\n', "unknown key(s) ['bogus']"),
        (
            'schema_version = 1\npack = "x"\n[[templates]]\nid = "x.t"\nkind = "dense"\nslots = [{ op = "attn_norm", match = "norm warp" }]\n',
            "unknown class 'warp'",
        ),
        ('schema_version = 1\npack = "x"\n[[templates]]\nid = "x.t"\nkind = "dense"\nslots = [{ op = "teleport", match = "norm" }]\n', "not in the vocabulary"),
        ('schema_version = 1\npack = "x"\nbad toml here\n', "invalid TOML"),
    ],
)
def test_rule_file_errors_name_file_line_and_id(tmp_path, body, needle):
    with pytest.raises(RuleError) as err:
        load_rules([write_pack(tmp_path, body)])
    assert needle in str(err.value)


def test_rules_cli_list_check_test(run, tmp_path):
    run("rules", "list", "-f", "csv")
    run("rules", "test")
    bad = write_pack(tmp_path, 'schema_version = 1\npack = "x"\n[[classes]]\nid = "x.a"\nclass = "gemm"\nshort = "^never_seen_kernel$"\n')
    names = tmp_path / "names"
    names.mkdir()
    (names / "x.tsv").write_text("gemm\tnvjet_x\tnvjet_x\tsrc\n")
    res = run("rules", "test", "--rules", bad, "--names", names, expect=1)
    assert "dead rule x.a" in res.output


def test_rule_set_canonical_names():
    rs = load_rules()
    assert rs.canonical_op("MLA") == "fmha"
    assert rs.canonical_op("low_latency_dispatch") == "dispatch"
    assert rs.canonical_op("gate+TopK") == "gate_topk"
    assert rs.canonical_op("Custom Thing") == "custom_thing"
    assert isinstance(rs, RuleSet)


def test_a_one_kernel_last_segment_is_no_step(builder, tmp_path):
    """Idle-gap steps of two kernels and, after the last gap, one lone kernel: exactly half the median step and
    not its sequence, so it is a fragment, not a step (no matrix multiply: the loop finder abstains)."""
    b = builder()
    b.gpu()
    t = 1_000_000
    for s in range(5):
        for j, name in enumerate(("ka", "kb")):
            a = t + s * 1_000_000 + j * 10_000
            b.kernel(a, a + 5_000, name, api_start=a - 2_000, api_end=a - 1_000)
    a = t + 5 * 1_000_000
    b.kernel(a, a + 5_000, "kc", api_start=a - 2_000, api_end=a - 1_000)
    with open_trace(b.write(tmp_path / "tail.sqlite")) as tr:
        m = map_trace(tr)
    assert len(m.steps) == 5
    assert (m.kernels.sort_values("start_ns")["step"].to_numpy()[-1]) == -1


def test_drop_close_is_greedy():
    from nsysparse.structure.loops import _drop_close

    assert _drop_close(np.array([0, 4, 8, 12, 16, 20]), 10).tolist() == [0, 12]
    assert _drop_close(np.array([0, 9, 11, 20, 30]), 10).tolist() == [0, 11, 30]


@pytest.mark.parametrize(
    ("container", "expected"), [("generate", ["prefill", "decode", "decode"]), ("train_epoch", ["train", "train", "train"]), ("upsample_loop", ["other"] * 3)]
)
def test_nvtx_container_phases_per_process(builder, tmp_path, container, expected):
    """Two processes, each a container holding three `step` ranges: phases come from the container's name, and the
    first step of each process's container is its own (not only the first of the trace)."""
    b = builder()
    b.gpu(0)
    b.gpu(1)
    for pid, dev in ((100, 0), (200, 1)):
        t0 = 1_000_000 + pid * 10
        b.push(t0, t0 + 1_000_000, container, pid=pid, tid=pid)
        for s in range(3):
            t = t0 + 1_000 + s * 300_000
            b.push(t, t + 200_000, "step", pid=pid, tid=pid)
            b.kernel(t + 20_000, t + 30_000, "nvjet_sm90_tst_128x16_NNT", device=dev, pid=pid, tid=pid, api_start=t + 100, api_end=t + 200)
    with open_trace(b.write(tmp_path / "c.sqlite")) as tr:
        m = map_trace(tr)
    for pid in (100, 200):
        assert m.steps[m.steps["pid"] == pid].sort_values("start_ns")["phase"].tolist() == expected
