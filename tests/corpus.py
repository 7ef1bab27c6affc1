"""Fixture corpus v2 (fixtures/v2): unpack a bare/twin pair and read the twin's NVTX truth per kernel.

Each v2 fixture NAME is two captures of the same program: NAME_bare (no NVTX at all) and NAME_twin (NVTX
ranges from module hooks; see nsysparse/workload/hf.py). Hooks add no kernels, so the twin's labels
transfer to the bare trace by position: kernel i of stream s in start order is the same launch in both
(checked by tests/test_corpus_v2.py, and recorded in the twin manifest's `twin_match`).

Only the standard library and pandas: this reads the SQLite export directly, not through nsysparse, so it
can be the independent truth that inferred structure is compared against.
"""

from __future__ import annotations

import json
import lzma
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

V2 = Path(__file__).resolve().parent.parent / "fixtures" / "v2"
CALL_RANGES = ("generate", "train_step")  # one per generate() call / training iteration
PHASE_RANGES = ("forward", "backward", "optimizer_step")
FORWARD_RANGE = "forward"  # the root module's range: one per top-level forward
NON_MODULE_RANGES = frozenset(CALL_RANGES) | {"backward", "optimizer_step"}
_LAYER = re.compile(r"^model\.layers\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class V2Fixture:
    name: str
    bare: Path  # unpacked trace.sqlite of NAME_bare
    twin: Path  # unpacked trace.sqlite of NAME_twin
    manifest: dict[str, Any]  # the twin's manifest (protocol, expected structure, truth, twin_match)
    bare_manifest: dict[str, Any]


def fixture_names() -> list[str]:
    """Names that have both a bare and a twin capture in fixtures/v2."""
    bare = {p.parent.name[: -len("_bare")] for p in V2.glob("*_bare/trace.sqlite.xz")}
    twin = {p.parent.name[: -len("_twin")] for p in V2.glob("*_twin/trace.sqlite.xz")}
    return sorted(bare & twin)


def unpack(xz: Path, dest: Path) -> Path:
    """Decompress `xz` to dest/<its folder>/trace.sqlite (never beside the committed file); reuse if there."""
    out = dest / xz.parent.name / "trace.sqlite"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        with lzma.open(xz) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        tmp.replace(out)
    return out


def load(name: str, dest: Path) -> V2Fixture:
    """Unpack fixture NAME's bare and twin traces under `dest` (a temporary folder) and read the manifests."""
    paths = {kind: V2 / f"{name}_{kind}" for kind in ("bare", "twin")}
    for p in paths.values():
        if not (p / "trace.sqlite.xz").exists():
            raise FileNotFoundError(f"no v2 fixture {p.name}")
    return V2Fixture(
        name=name,
        bare=unpack(paths["bare"] / "trace.sqlite.xz", dest),
        twin=unpack(paths["twin"] / "trace.sqlite.xz", dest),
        manifest=json.loads((paths["twin"] / "manifest.json").read_text()),
        bare_manifest=json.loads((paths["bare"] / "manifest.json").read_text()),
    )


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def kernels(path: Path) -> pd.DataFrame:
    """Every kernel with its launch API call: one row per kernel, in launch order (correlationId, then start).

    Columns: start_ns, end_ns, stream, correlation_id, name (shortName), demangled, launch_ns (start of the
    launching runtime call; for a kernel replayed from a CUDA graph, the cudaGraphLaunch), launch_tid.
    """
    sql = """
        SELECT k.start AS start_ns, k."end" AS end_ns, k.streamId AS stream, k.correlationId AS correlation_id,
               s.value AS name, d.value AS demangled, r.start AS launch_ns, r.globalTid AS launch_tid
        FROM CUPTI_ACTIVITY_KIND_KERNEL k
        JOIN StringIds s ON s.id = k.shortName
        JOIN StringIds d ON d.id = k.demangledName
        LEFT JOIN CUPTI_ACTIVITY_KIND_RUNTIME r
          ON r.correlationId = k.correlationId AND (r.globalTid & 0xFFFFFFFFFF000000) = (k.globalPid & 0xFFFFFFFFFF000000)
        ORDER BY k.correlationId, k.start, k.streamId
    """
    with _connect(path) as con:
        df = pd.read_sql_query(sql, con)
    return df.reset_index(drop=True)


def kernel_sequences(path: Path) -> dict[int, list[str]]:
    """stream -> kernel names (shortName) in start order: what must be identical between a bare and its twin."""
    with _connect(path) as con:
        rows = con.execute(
            "SELECT k.streamId, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = k.shortName ORDER BY k.streamId, k.start, k.correlationId"
        ).fetchall()
    out: dict[int, list[str]] = {}
    for stream, name in rows:
        out.setdefault(int(stream), []).append(name)
    return out


def nvtx_ranges(path: Path, all_domains: bool = False) -> pd.DataFrame:
    """Push/pop ranges (eventType 59) of the default NVTX domain: start_ns, end_ns, tid, domain, text.

    The twins' ranges are all in the default domain (torch.cuda.nvtx). Libraries add their own domains, e.g.
    CCCL's `cub::DeviceScan::InclusiveScan` in the MoE twin: those are left out unless `all_domains`.
    Empty when the trace has no NVTX.
    """
    with _connect(path) as con:
        has = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'NVTX_EVENTS'").fetchone()
        if not has:
            return pd.DataFrame({"start_ns": [], "end_ns": [], "tid": [], "domain": [], "text": []})
        df = pd.read_sql_query(
            f"""SELECT n.start AS start_ns, n."end" AS end_ns, n.globalTid AS tid, COALESCE(n.domainId, 0) AS domain,
                      COALESCE(n.text, s.value) AS text
               FROM NVTX_EVENTS n LEFT JOIN StringIds s ON s.id = n.textId
               WHERE n.eventType = 59 AND n."end" IS NOT NULL {"" if all_domains else "AND COALESCE(n.domainId, 0) = 0"}
               ORDER BY n.start""",
            con,
        )
    return df


def twin_labels(twin_path: Path) -> pd.DataFrame:
    """The twin's truth for every kernel, in launch order.

    Columns: kernel_index (launch order: by correlationId of the launch, then start; identical between a bare
    and its twin where their kernel sequences match), start_ns, end_ns, stream, name, demangled,
    forward (index of the top-level `forward` range the launch is in, -1 outside), call (index of the
    `generate` / `train_step` range, -1 outside), phase (`forward`, `backward`, `optimizer_step` or ''),
    module (innermost module range: a named_modules() name, `forward` for the root module's own code,
    '' outside any), layer (N of the innermost `model.layers.N...` range, -1 if none).

    Only default-domain ranges count (library domains such as CCCL's are not the twin's truth). A kernel
    belongs to the ranges open at the start of its launch API call. The ranges are matched by time
    against every thread's ranges, not only the launching thread's: backward kernels launch from autograd's
    device thread while the main thread sits in its `backward` range.
    """
    k = kernels(twin_path)
    r = nvtx_ranges(twin_path)
    n = len(k)
    forward = [-1] * n
    call = [-1] * n
    phase = [""] * n
    module = [""] * n
    if len(r):
        # index of each range among its kind, in start order
        r = r.sort_values(["start_ns", "end_ns"], ascending=[True, False], kind="stable").reset_index(drop=True)
        fwd_index = (r["text"] == FORWARD_RANGE).cumsum() - 1
        call_index = r["text"].isin(CALL_RANGES).cumsum() - 1
        starts, ends, texts = r["start_ns"].tolist(), r["end_ns"].tolist(), r["text"].tolist()
        tids = r["tid"].tolist()
        stacks: dict[int, list[int]] = {}
        order = sorted(range(n), key=lambda i: (k.at[i, "launch_ns"], i))
        j = 0
        for i in order:
            t = k.at[i, "launch_ns"]
            if pd.isna(t):
                continue
            while j < len(starts) and starts[j] <= t:
                st = stacks.setdefault(tids[j], [])
                while st and ends[st[-1]] <= starts[j]:
                    st.pop()
                st.append(j)
                j += 1
            open_ranges: list[int] = []
            for st in stacks.values():
                while st and ends[st[-1]] <= t:
                    st.pop()
                open_ranges.extend(st)
            open_ranges.sort(key=lambda x: (starts[x], -ends[x]))  # outermost first
            for x in open_ranges:
                text = texts[x]
                if text == FORWARD_RANGE:
                    forward[i] = int(fwd_index[x])
                if text in CALL_RANGES:
                    call[i] = int(call_index[x])
                if text in PHASE_RANGES:
                    phase[i] = text
                if text not in NON_MODULE_RANGES:
                    module[i] = text
    out = pd.DataFrame(
        {
            "kernel_index": range(n),
            "start_ns": k["start_ns"],
            "end_ns": k["end_ns"],
            "stream": k["stream"],
            "name": k["name"],
            "demangled": k["demangled"],
            "forward": forward,
            "call": call,
            "phase": phase,
            "module": module,
        }
    )
    out["layer"] = [int(m.group(1)) if (m := _LAYER.match(text)) else -1 for text in out["module"]]
    return out


def bare_labels(bare_path: Path, twin_path: Path, strict: bool = True) -> pd.DataFrame:
    """The bare trace's kernels labelled with the twin's truth, matched by (stream, position in start order).

    With `strict`, raises ValueError when a stream's kernel-name sequence differs between bare and twin; else
    the kernels of such streams keep forward/call/layer -1 and empty module/phase.
    """
    labels = twin_labels(twin_path)
    labels = labels.sort_values(["stream", "start_ns", "kernel_index"], kind="stable")
    labels["pos"] = labels.groupby("stream").cumcount()
    bare = kernels(bare_path)
    bare["kernel_index"] = range(len(bare))
    bare = bare.sort_values(["stream", "start_ns", "kernel_index"], kind="stable")
    bare["pos"] = bare.groupby("stream").cumcount()
    twin_seq, bare_seq = kernel_sequences(twin_path), kernel_sequences(bare_path)
    bad = sorted(s for s in set(twin_seq) | set(bare_seq) if twin_seq.get(s) != bare_seq.get(s))
    if bad and strict:
        raise ValueError(f"kernel sequences differ between bare and twin on streams {bad}")
    cols = ["forward", "call", "phase", "module", "layer"]
    merged = bare.merge(labels[["stream", "pos", *cols]], on=["stream", "pos"], how="left")
    ok = ~merged["stream"].isin(bad)
    for c in ("forward", "call", "layer"):
        merged[c] = merged[c].where(ok, -1).fillna(-1).astype(int)
    for c in ("phase", "module"):
        merged[c] = merged[c].where(ok, "").fillna("")
    merged = merged.sort_values("kernel_index").reset_index(drop=True)
    return merged[["kernel_index", "start_ns", "end_ns", "stream", "name", *cols]]


def compare(bare_path: Path, twin_path: Path) -> dict[str, Any]:
    """How the bare and twin kernel sequences relate (the twin manifest's `twin_match` block)."""
    b, t = kernel_sequences(bare_path), kernel_sequences(twin_path)
    streams = sorted(set(b) | set(t))
    kb, kt = kernels(bare_path), kernels(twin_path)
    return {
        "per_stream_start_order_equal": {str(s): b.get(s) == t.get(s) for s in streams},
        "kernels_per_stream": {str(s): [len(b.get(s, [])), len(t.get(s, []))] for s in streams},
        "launch_order_equal": kb["name"].tolist() == kt["name"].tolist(),
        "demangled_launch_order_equal": kb["demangled"].tolist() == kt["demangled"].tolist(),
        "correlation_ids_equal": kb["correlation_id"].tolist() == kt["correlation_id"].tolist(),
    }


# The twin's truth for op names, as the vocabulary (rules/vocabulary.toml) defines them: a leaf module's range
# names its op, a function range inside a module names its op, and a kernel of a module's own code takes the
# op its code is part of. Written out here (not read from nsysparse's aliases) so that it is an independent truth.
TRUTH_MODULE_OPS = {
    "embed_tokens": "embed",
    "rotary_emb": "rope",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "q_proj": "q_proj",
    "k_proj": "k_proj",
    "v_proj": "v_proj",
    "q_norm": "qk_norm",
    "k_norm": "qk_norm",
    "o_proj": "o_proj",
    "gate_proj": "mlp_up",
    "up_proj": "mlp_up",
    "act_fn": "mlp_act",
    "down_proj": "mlp_down",
    "gate": "gate_topk",
    "experts": "experts",
    "norm": "final_norm",
    "lm_head": "lm_head",
}
TRUTH_FUNCTION_OPS = {"apply_rotary_pos_emb": "rope", "sdpa_attention_forward": "fmha", "Cache.update": "kv_cache"}
"""Function ranges of the `functions` twins (nsysparse/workload/hf.py) and the op each one is."""
_FUNCTION = re.compile(r"\.(" + "|".join(re.escape(f) for f in TRUTH_FUNCTION_OPS) + r")$")


def truth_op(labels: pd.DataFrame) -> pd.Series:
    """The true op of each kernel of `labels` (twin_labels/bare_labels rows, in launch order), '' where the twin's
    code says no op (the model's own code outside its modules, kernels outside any module range).

    - a kernel in a module range whose last name part is in TRUTH_MODULE_OPS (the innermost such part on the
      path: `experts.act_fn` stays `experts`), or in a function range (TRUTH_FUNCTION_OPS): that op;
    - the own code of an MLP module (`...mlp`: the product act(gate) * up in HF's dense MLP) is `mlp_act` in a
      dense layer and `experts` in a MoE block; the own code of a decoder layer (`model.layers.N`: the residual
      adds) and of the attention module (transposes) takes the op of the kernel launched before it, as the
      vocabulary puts residual adds in o_proj and mlp_down;
    - a backward range `<module>.backward` names the op of <module> (phase tells forward from backward); the own
      code of a decoder layer in backward holds the attention core's backward and the rotary embedding's, which
      the twin's ranges cannot tell apart (the attention module's backward hook does not cover them): there the
      truth falls back on kernel names (cuDNN/flash backward kernels: `fmha`, the rest: `rope`), as the
      embedding's backward (its hook never fires) does. Agreement on those three ops is weaker evidence: it
      shares the kernel-name knowledge of the rule packs;
    - training: the root module's own code (the loss), and backward kernels before any module's backward range
      (the loss's backward), are `loss`; the optimizer step's kernels are `optimizer`.
    """
    module = labels["module"].fillna("").astype(str)
    base = module.str.replace(r"\.backward$", "", regex=True)
    out: list[str] = []
    moe_layers = set(labels.loc[base.str.contains(r"\.mlp\.experts"), "layer"].tolist())
    for text, layer in zip(base.tolist(), labels["layer"].tolist()):
        op = ""
        m = _FUNCTION.search(text)
        if m:
            op = TRUTH_FUNCTION_OPS[m.group(1)]
        elif text:
            parts = text.split(".")
            for i, part in enumerate(parts):
                if part in TRUTH_MODULE_OPS and not (part == "norm" and i != len(parts) - 1):
                    op = TRUTH_MODULE_OPS[part]
                    if part in ("experts", "gate"):
                        break
            if not op and parts[-1] == "mlp":
                op = "experts" if layer in moe_layers else "mlp_act"
            if not op and (re.fullmatch(r"model\.layers\.\d+", text) or parts[-1] == "self_attn"):
                op = "<inherit>"
        out.append(op)
    phase = labels["phase"].fillna("").tolist()
    names = labels["name"].fillna("").astype(str).tolist()
    seen_module_bwd = False
    prev = ""
    for i, op in enumerate(out):  # launch order
        if phase[i] == "backward":
            if module.iat[i].endswith(".backward"):
                seen_module_bwd = True
            elif not seen_module_bwd:
                op = "loss"
            if base.iat[i].endswith(".mlp") and op and prev == "mlp_up":
                op = "<inherit>"  # the sum of the gate and up projections' input gradients
            if _EMBED_BWD.search(names[i]):
                op = "embed"  # the embedding's backward hook never fires (its input needs no gradient)
            if op == "<inherit>" and re.fullmatch(r"model\.layers\.\d+", base.iat[i]) and prev in ("o_proj", "fmha", "rope"):
                op = "fmha" if _FMHA_BWD.search(names[i]) else "rope"
        elif phase[i] == "optimizer_step":
            op = "optimizer"
        elif base.iat[i] == FORWARD_RANGE and phase[i] == "forward" and labels["call"].iat[i] >= 0 and _is_train(labels):
            op = "loss"
        if phase[i] != "backward":
            seen_module_bwd = False
        out[i] = prev if op == "<inherit>" else op
        if out[i]:
            prev = out[i]
    return pd.Series(out, index=labels.index, name="truth_op")


_EMBED_BWD = re.compile(r"^embedding_backward|^compute_grad_weight|^sum_and_scatter|^krn_partial")
_FMHA_BWD = re.compile(r"bprop|flash_bwd|compute_dot_do_o|convert_dq|fmha_reduce_head|dq_dk_dv")


def _is_train(labels: pd.DataFrame) -> bool:
    return bool((labels["phase"] == "backward").any())


# ---- compiled forwards: the truth from TorchInductor's provenance (fixtures/v2/*_prov_*) ---------------------------
_HANDLE = re.compile(r"# \[Provenance debug handles\] (\S+)")
_SOURCE_FUNCTION = re.compile(r", in (\w+)$")
TRUTH_FUNCTION_NAMES = {"apply_rotary_pos_emb": "rope", "rotate_half": "rope", "sdpa_attention_forward": "fmha", "repeat_kv": "fmha", "update": "kv_cache"}
"""Functions (innermost frame of a node's stack trace) whose nodes are that op wherever their module is."""


def provenance_layers(folder: Path) -> list[int]:
    """The decoder layer (N of `model.layers.N`, the most common over its source nodes) of every launch of the
    compiled graph, in `provenance_launches` order; -1 for kernels of no layer (embedding, rotary table, head)."""
    code = next(folder.rglob("output_code.py")).read_text()
    mapping = json.loads(next(folder.rglob("inductor_provenance_tracking_node_mappings.json")).read_text())
    nodes = json.loads((folder / "module_stacks.json").read_text())[0]["nodes"]
    out = []
    for handle in _HANDLE.findall(code):
        layers = []
        for post in mapping["cppCodeToPost"].get(handle, []):
            for pre in mapping["postToPre"].get(post, []):
                mods = nodes.get(pre, {}).get("modules") or []
                m = _MODULE_LAYER.search(mods[-1]) if mods else None
                layers.append(int(m.group(1)) if m else -1)
        if not handle.startswith("triton_"):
            layers = layers[:1]
        out.append(max(dict.fromkeys(layers), key=layers.count) if layers else -1)
    return out


_MODULE_LAYER = re.compile(r"model\.layers(?:\.|\[)(\d+)")


def provenance_launches(folder: Path) -> list[tuple[str, str]]:
    """(kernel handle, true op) for every kernel launch of the compiled graph, in the order its `call()` launches
    them (a CUDA-graph replay runs them in this order). A handle is a Triton kernel's name or an extern call
    (`extern_kernels.mm`). The op: the most common op of the kernel's source nodes, where a node's op comes from
    the innermost module it was traced in (`module_stacks.json`, written by nsysparse/workload/hf.py beside
    Inductor's debug trace) as `truth_op` names modules, or from its function (TRUTH_FUNCTION_NAMES). An extern
    call (cuBLAS, cuDNN attention) lists its inputs' nodes too: its op is that of its own node, the first."""
    code = next(folder.rglob("output_code.py")).read_text()
    mapping = json.loads(next(folder.rglob("inductor_provenance_tracking_node_mappings.json")).read_text())
    nodes = json.loads((folder / "module_stacks.json").read_text())[0]["nodes"]
    out = []
    for handle in _HANDLE.findall(code):
        ops: list[str] = []
        for post in mapping["cppCodeToPost"].get(handle, []):
            for pre in mapping["postToPre"].get(post, []):
                ops.append(_node_op(nodes.get(pre, {})))
        if not handle.startswith("triton_"):
            ops = ops[:1]
        ops = [o for o in ops if o]
        op = max(dict.fromkeys(ops), key=ops.count) if ops else ""
        out.append((handle.rsplit(":", 1)[0], op))
    return out


def _node_op(node: dict[str, Any]) -> str:
    source = node.get("source") or []
    m = _SOURCE_FUNCTION.search(source[0].strip()) if source else None
    if m and m.group(1) in TRUTH_FUNCTION_NAMES:
        return TRUTH_FUNCTION_NAMES[m.group(1)]
    modules = node.get("modules") or []
    if not modules:
        return ""
    path = re.sub(r"^L\['self'\]\.?", "", modules[-1]).replace("[", ".").replace("]", "")
    row = pd.DataFrame({"module": [path], "layer": [-1], "phase": ["forward"], "name": [""], "call": [0]})
    op = truth_op(row).iat[0]
    return "" if op == "<inherit>" else op


def replay_labels(bare: Path, launches: list[tuple[str, str]]) -> pd.DataFrame:
    """The bare trace's kernels with their true op where they belong to a CUDA-graph replay of the compiled graph:
    a replay is the kernels of one cudaGraphLaunch (one correlationId); it is labelled only when it runs exactly
    the graph's launches, each Triton kernel where the graph launches it. Columns: start_ns, end_ns, stream,
    name, truth_op ('' outside replays)."""
    k = kernels(bare)
    with _connect(bare) as con:
        graph = pd.read_sql_query("SELECT correlationId AS correlation_id, start AS start_ns, graphNodeId AS node FROM CUPTI_ACTIVITY_KIND_KERNEL", con)
    k = k.merge(graph, on=["correlation_id", "start_ns"], how="left")
    k["truth_op"] = ""
    handles = [h for h, _ in launches]
    ops = [o for _, o in launches]
    for _, rows in k[k["node"].notna()].sort_values("start_ns").groupby("correlation_id"):
        names = rows["name"].tolist()
        if len(names) != len(handles) or any(h.startswith("triton_") and h != n for h, n in zip(handles, names, strict=True)):
            continue
        k.loc[rows.index, "truth_op"] = ops
    return k[["start_ns", "end_ns", "stream", "name", "truth_op"]]


def load_provenance(name: str, dest: Path) -> tuple[Path, Path]:
    """Unpack fixture NAME (a bare capture of compiled code with provenance.tar.xz beside it) under `dest`:
    (its trace.sqlite, its provenance folder)."""
    folder = V2 / name
    trace = unpack(folder / "trace.sqlite.xz", dest)
    out = dest / name / "provenance"
    if not out.exists():
        import tarfile

        with tarfile.open(folder / "provenance.tar.xz") as tar:
            tar.extractall(dest / name, filter="data")
    return trace, out


def replay_truth_from_eager(graph_bare: Path, eager_twin: Path) -> pd.DataFrame:
    """Truth for the CUDA-graph replays of `graph_bare` from the twin of the same program run eagerly: when a
    replay (the kernels of one cudaGraphLaunch) launches exactly the kernels of an eager decode forward of the twin,
    kernel i of the replay gets the op of kernel i of that forward (corpus.truth_op). Columns: start_ns, stream,
    truth_op ('' outside matched replays)."""
    lab = twin_labels(eager_twin)
    lab["truth_op"] = truth_op(lab)
    by_forward = {f: (rows["name"].tolist(), rows["truth_op"].tolist()) for f, rows in lab[lab["forward"] >= 0].sort_values("start_ns").groupby("forward")}
    k = kernels(graph_bare)
    with _connect(graph_bare) as con:
        graph = pd.read_sql_query("SELECT correlationId AS correlation_id, start AS start_ns, graphNodeId AS node FROM CUPTI_ACTIVITY_KIND_KERNEL", con)
    k = k.merge(graph, on=["correlation_id", "start_ns"], how="left")
    k["truth_op"] = ""
    for _, rows in k[k["node"].notna()].sort_values("start_ns").groupby("correlation_id"):
        names = rows["name"].tolist()
        match = next((ops for seq, ops in by_forward.values() if seq == names), None)
        if match is not None:
            k.loc[rows.index, "truth_op"] = match
    return k[["start_ns", "stream", "truth_op"]]
