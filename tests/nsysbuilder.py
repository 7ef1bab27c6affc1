"""Write small nsys-like SQLite exports for a chosen schema era, so each test states its own data.

Eras follow what real exports look like (../shared/reference/nsys-schema.md §9):
  "2021"   no metadata table, TARGET_INFO_CUDA_GPU, kernel without mangledName
  "2022.2" EXPORT_META_DATA, TARGET_INFO_GPU, kernel +mangledName
  "2023.1" like 2022.2 plus ENUM tables (with the KRENEL typo)
  "2024.5" META_DATA_EXPORT + META_DATA_CAPTURE, greenContextId columns
  "2026.2" kernel +graphId/cluster columns, SYNC deprecatedSyncType, NVTX binaryData

Usage:
    b = TraceBuilder("2024.5")
    b.gpu(0, "NVIDIA H100 80GB HBM3")
    b.kernel(1_000, 2_000, "void gemm<...>", short="gemm", api_start=900)
    b.push(500, 5_000, "layer_0")
    b.write(tmp_path / "t.sqlite")
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ERAS = ("2021", "2022.2", "2023.1", "2024.5", "2026.2")
VERSIONS = {"2022.2": ("2022.2.1.31", "2.9.1"), "2023.1": ("2023.1.2.43", "3.1.2"), "2024.5": ("2024.5.1.113", "3.13.2"), "2026.2": ("2026.2.1.210", "3.25.0")}


def gtid(pid: int, tid: int) -> int:
    """Serialized globalTid as nsys writes it (hardware/VM bits 0x0001 set, as in real files)."""
    return (1 << 48) | (pid << 24) | tid


def gpid(pid: int) -> int:
    return (1 << 48) | (pid << 24)


def _kernel_cols(era: str) -> list[str]:
    cols = ["start", "end", "deviceId", "contextId"]
    if era >= "2024.5":
        cols.append("greenContextId")
    cols += ["streamId", "correlationId", "globalPid", "demangledName", "shortName"]
    if era >= "2022.2":
        cols.append("mangledName")
    cols += [
        "launchType",
        "cacheConfig",
        "registersPerThread",
        "gridX",
        "gridY",
        "gridZ",
        "blockX",
        "blockY",
        "blockZ",
        "staticSharedMemory",
        "dynamicSharedMemory",
        "localMemoryPerThread",
        "localMemoryTotal",
        "gridId",
        "sharedMemoryExecuted",
        "graphNodeId",
        "sharedMemoryLimitConfig",
    ]
    if era >= "2026.1":
        cols += ["qmdBulkReleaseDone", "qmdPreexitDone", "qmdLastCtaDone", "graphId", "clusterX", "clusterY", "clusterZ"]
    return cols


def _mem_cols(era: str, memset: bool = False) -> list[str]:
    cols = ["start", "end", "deviceId", "contextId"]
    if era >= "2024.5":
        cols.append("greenContextId")
    cols += ["streamId", "correlationId", "globalPid"]
    cols += ["value", "bytes", "graphNodeId", "memKind"] if memset else ["bytes", "copyKind", "srcKind", "dstKind", "graphNodeId"]
    return cols


def _sync_cols(era: str) -> list[str]:
    cols = ["start", "end", "deviceId", "contextId"]
    if era >= "2024.5":
        cols.append("greenContextId")
    cols += ["streamId", "correlationId", "globalPid"]
    cols += ["deprecatedSyncType", "syncType", "eventId", "eventSyncId"] if era >= "2026.1" else ["syncType", "eventId"]
    return cols


def _nvtx_cols(era: str) -> list[str]:
    cols = [
        "start",
        "end",
        "eventType",
        "rangeId",
        "category",
        "color",
        "text",
        "globalTid",
        "endGlobalTid",
        "textId",
        "domainId",
        "uint64Value",
        "int64Value",
        "doubleValue",
        "uint32Value",
        "int32Value",
        "floatValue",
        "jsonTextId",
        "jsonText",
    ]
    if era >= "2024.6":
        cols.append("binaryData")
    return cols


@dataclass
class TraceBuilder:
    era: str = "2024.5"
    strings: dict[str, int] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    corr: int = 0
    graph_mode: str | None = None
    secrets: bool = True  # write environment/host rows that must never be printed

    def __post_init__(self) -> None:
        assert self.era in ERAS, self.era

    # -- helpers ------------------------------------------------------------------------------------
    def sid(self, value: str | None) -> int | None:
        if value is None:
            return None
        if value not in self.strings:
            self.strings[value] = len(self.strings) + 1
        return self.strings[value]

    def add(self, table: str, **row: Any) -> dict[str, Any]:
        self.rows.setdefault(table, []).append(row)
        return row

    def next_corr(self) -> int:
        self.corr += 1
        return self.corr

    # -- events -------------------------------------------------------------------------------------
    def gpu(self, device_id: int = 0, name: str = "NVIDIA H100 80GB HBM3", sm: int = 132) -> None:
        if self.era == "2021":
            self.add(
                "TARGET_INFO_CUDA_GPU",
                deviceId=device_id,
                name=name,
                numMultiprocessors=sm,
                globalMemorySize=80 * 2**30,
                computeCapabilityMajor=9,
                computeCapabilityMinor=0,
            )
        else:
            self.add(
                "TARGET_INFO_GPU",
                id=device_id,
                name=name,
                smCount=sm,
                totalMemory=80 * 2**30,
                memoryBandwidth=3_350_000_000_000,
                computeMajor=9,
                computeMinor=0,
                busLocation="0000:00:00.0",
                cuDevice=device_id,
            )

    def api(self, start: int, end: int, name: str, pid: int = 100, tid: int = 100, corr: int | None = None, event_class: int = 0) -> int:
        corr = self.next_corr() if corr is None else corr
        chain = None
        if event_class == 67:  # a CUDA backtrace row (--cudabacktrace): nsys stores its call chain too
            chain = len(self.rows.get("CUDA_CALLCHAINS", []))
            self.add("CUDA_CALLCHAINS", id=chain, symbol=self.sid("main"), module=self.sid("/usr/bin/app"), unresolved=1, originalIP=4096 + chain, stackDepth=0)
        self.add(
            "CUPTI_ACTIVITY_KIND_RUNTIME",
            start=start,
            end=end,
            eventClass=event_class,
            globalTid=gtid(pid, tid),
            correlationId=corr,
            nameId=self.sid(name),
            returnValue=0,
            callchainId=chain,
        )
        return corr

    def kernel(
        self,
        start: int,
        end: int,
        name: str,
        short: str | None = None,
        *,
        device: int = 0,
        stream: int = 7,
        pid: int = 100,
        tid: int = 100,
        api_start: int | None = None,
        api_end: int | None = None,
        api_name: str = "cudaLaunchKernel_v7000",
        corr: int | None = None,
        graph_node: int | None = None,
        grid: tuple[int, int, int] = (1, 1, 1),
        block: tuple[int, int, int] = (128, 1, 1),
        with_api: bool = True,
    ) -> int:
        if corr is None:
            if with_api:
                a0 = start - 5_000 if api_start is None else api_start
                a1 = a0 + 2_000 if api_end is None else api_end
                corr = self.api(a0, a1, api_name, pid=pid, tid=tid)
            else:
                corr = self.next_corr()
        short = short or name.split("(")[0].split("<")[0].split()[-1]
        self.add(
            "CUPTI_ACTIVITY_KIND_KERNEL",
            start=start,
            end=end,
            deviceId=device,
            contextId=1,
            greenContextId=None,
            streamId=stream,
            correlationId=corr,
            globalPid=gpid(pid),
            demangledName=self.sid(name),
            shortName=self.sid(short),
            mangledName=self.sid("_Z" + short),
            launchType=0,
            cacheConfig=0,
            registersPerThread=32,
            gridX=grid[0],
            gridY=grid[1],
            gridZ=grid[2],
            blockX=block[0],
            blockY=block[1],
            blockZ=block[2],
            staticSharedMemory=0,
            dynamicSharedMemory=0,
            localMemoryPerThread=0,
            localMemoryTotal=0,
            gridId=corr,
            sharedMemoryExecuted=0,
            graphNodeId=graph_node,
            sharedMemoryLimitConfig=0,
            graphId=None,
        )
        return corr

    def memcpy(
        self,
        start: int,
        end: int,
        nbytes: int = 1024,
        kind: int = 1,
        *,
        device: int = 0,
        stream: int = 7,
        pid: int = 100,
        tid: int = 100,
        api_start: int | None = None,
        api_end: int | None = None,
        api_name: str = "cudaMemcpyAsync_v3020",
    ) -> int:
        a0 = start - 3_000 if api_start is None else api_start
        corr = self.api(a0, a0 + 1_000 if api_end is None else api_end, api_name, pid=pid, tid=tid)
        self.add(
            "CUPTI_ACTIVITY_KIND_MEMCPY",
            start=start,
            end=end,
            deviceId=device,
            contextId=1,
            streamId=stream,
            correlationId=corr,
            globalPid=gpid(pid),
            bytes=nbytes,
            copyKind=kind,
            srcKind=1,
            dstKind=2,
            graphNodeId=None,
        )
        return corr

    def memset(self, start: int, end: int, nbytes: int = 1024, *, device: int = 0, stream: int = 7, pid: int = 100, tid: int = 100) -> int:
        corr = self.api(start - 3_000, start - 2_000, "cudaMemsetAsync_v3020", pid=pid, tid=tid)
        self.add(
            "CUPTI_ACTIVITY_KIND_MEMSET",
            start=start,
            end=end,
            deviceId=device,
            contextId=1,
            streamId=stream,
            correlationId=corr,
            globalPid=gpid(pid),
            value=0,
            bytes=nbytes,
            graphNodeId=None,
            memKind=1,
        )
        return corr

    def sync(
        self,
        start: int,
        end: int,
        sync_type: int = 3,
        *,
        device: int = 0,
        stream: int = 7,
        pid: int = 100,
        tid: int = 100,
        api_name: str = "cudaStreamSynchronize_v3020",
    ) -> int:
        corr = self.api(start, end, api_name, pid=pid, tid=tid)
        row = dict(start=start, end=end, deviceId=device, contextId=1, streamId=stream, correlationId=corr, globalPid=gpid(pid), eventId=0)
        if self.era >= "2026.1":
            row.update(deprecatedSyncType=None, syncType=sync_type, eventSyncId=0)
        else:
            row.update(syncType=sync_type)
        self.add("CUPTI_ACTIVITY_KIND_SYNCHRONIZATION", **row)
        return corr

    def push(
        self, start: int, end: int | None, text: str, *, pid: int = 100, tid: int = 100, domain: int = 0, registered: bool = False, event_type: int = 59
    ) -> None:
        """NVTX push/pop range (59); `registered` stores the text via textId like NCCL does."""
        self.add(
            "NVTX_EVENTS",
            start=start,
            end=end,
            eventType=event_type,
            rangeId=0,
            category=0,
            color=None,
            text=None if registered else text,
            globalTid=gtid(pid, tid),
            endGlobalTid=None,
            textId=self.sid(text) if registered else None,
            domainId=domain,
        )

    def range(self, start: int, end: int, text: str, *, pid: int = 100, tid: int = 100, end_tid: int | None = None, domain: int = 0) -> None:
        """NVTX start/end range (60)."""
        self.add(
            "NVTX_EVENTS",
            start=start,
            end=end,
            eventType=60,
            rangeId=len(self.rows.get("NVTX_EVENTS", [])) + 1,
            category=0,
            color=None,
            text=text,
            globalTid=gtid(pid, tid),
            endGlobalTid=gtid(pid, end_tid) if end_tid else None,
            textId=None,
            domainId=domain,
        )

    def mark(self, ts: int, text: str, *, pid: int = 100, tid: int = 100) -> None:
        self.add(
            "NVTX_EVENTS",
            start=ts,
            end=None,
            eventType=34,
            rangeId=0,
            category=0,
            color=None,
            text=text,
            globalTid=gtid(pid, tid),
            endGlobalTid=None,
            textId=None,
            domainId=0,
        )

    def domain(self, domain_id: int, name: str, *, pid: int = 100, tid: int = 100) -> None:
        self.add(
            "NVTX_EVENTS",
            start=0,
            end=None,
            eventType=75,
            rangeId=0,
            category=0,
            color=None,
            text=name,
            globalTid=gtid(pid, tid),
            endGlobalTid=None,
            textId=None,
            domainId=domain_id,
        )

    def thread(self, pid: int, tid: int, name: str) -> None:
        self.add("ThreadNames", nameId=self.sid(name), priority=0, globalTid=gtid(pid, tid))

    def process(self, pid: int, name: str) -> None:
        self.add("PROCESSES", globalPid=gpid(pid), pid=pid, name=name)

    # -- writing ------------------------------------------------------------------------------------
    def _schema(self) -> dict[str, list[str]]:
        era = self.era
        tables = {
            "StringIds": ["id", "value"],
            "CUPTI_ACTIVITY_KIND_KERNEL": _kernel_cols(era),
            "CUPTI_ACTIVITY_KIND_RUNTIME": ["start", "end", "eventClass", "globalTid", "correlationId", "nameId", "returnValue", "callchainId"],
            "CUPTI_ACTIVITY_KIND_MEMCPY": _mem_cols(era),
            "CUPTI_ACTIVITY_KIND_MEMSET": _mem_cols(era, memset=True),
            "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION": _sync_cols(era),
            "NVTX_EVENTS": _nvtx_cols(era),
            "ThreadNames": ["nameId", "priority", "globalTid"],
            "CUDA_CALLCHAINS": ["id", "symbol", "module", "unresolved", "originalIP", "stackDepth"],
            "TARGET_INFO_GPU": [
                "vmId",
                "id",
                "name",
                "busLocation",
                "isDiscrete",
                "l2CacheSize",
                "totalMemory",
                "memoryBandwidth",
                "clockRate",
                "smCount",
                "uuid",
                "cuDevice",
                "computeMajor",
                "computeMinor",
            ],
            "TARGET_INFO_CUDA_GPU": [
                "vmId",
                "name",
                "pciBusId",
                "globalMemoryBandwidth",
                "globalMemorySize",
                "numMultiprocessors",
                "computeCapabilityMajor",
                "computeCapabilityMinor",
                "deviceId",
                "pid",
            ],
            "TARGET_INFO_SYSTEM_ENV": ["globalVid", "devStateName", "name", "nameEnum", "value"],
            "ANALYSIS_DETAILS": ["globalVid", "duration", "startTime", "stopTime"],
        }
        if era >= "2022.2":
            tables["PROCESSES"] = ["globalPid", "pid", "name"]
        if era in ("2022.2", "2023.1"):
            tables["EXPORT_META_DATA"] = ["name", "value"]
        if era >= "2024.5":
            tables["META_DATA_EXPORT"] = ["name", "value"]
            tables["META_DATA_CAPTURE"] = ["name", "value"]
        if era == "2023.1":
            tables["ENUM_CUDA_KRENEL_LAUNCH_TYPE"] = ["id", "name", "label"]
        return tables

    def write(self, path: Path | str, *, drop: tuple[str, ...] = ()) -> Path:
        """Write the SQLite file. Event tables without rows are left out (nsys exports lazily)."""
        path = Path(path)
        if path.exists():
            path.unlink()
        schema = self._schema()
        rows = {k: list(v) for k, v in self.rows.items()}
        if self.secrets:
            rows.setdefault("TARGET_INFO_SYSTEM_ENV", []).extend(
                [
                    dict(globalVid=1, devStateName="", name="Hostname", nameEnum=1, value="secret-host-01"),
                    dict(globalVid=1, devStateName="", name="DeviceEnvironment", nameEnum=2, value="API_TOKEN=hunter2-do-not-print"),
                ]
            )
        if self.era in VERSIONS:
            product, schema_v = VERSIONS[self.era]
            meta_table = "EXPORT_META_DATA" if self.era < "2024.5" else "META_DATA_EXPORT"
            rows[meta_table] = [
                dict(name="EXPORT_PRODUCT_VERSION", value=product),
                dict(name="EXPORT_SCHEMA_VERSION", value=schema_v),
                dict(name="EXPORT_HOST", value="secret-host-01"),
                dict(name="EXPORT_USER", value="alice-secret"),
            ]
            if self.era >= "2024.5":
                cap = [
                    dict(name="PROCESS_0:ENVIRONMENT_VARIABLE", value='API_TOKEN="hunter2-do-not-print"'),
                    dict(name="DEVICE_DISPLAY_NAME", value="secret-host-01"),
                    dict(name="CAPTURE_EVENT_TYPE", value="Cuda"),
                ]
                if self.graph_mode:
                    cap.append(dict(name="CUDA_GRAPH_TRACE_OPTIONS:MODE", value=self.graph_mode))
                rows["META_DATA_CAPTURE"] = cap
        rows["StringIds"] = [dict(id=i, value=v) for v, i in self.strings.items()]
        con = sqlite3.connect(path)
        for table, cols in schema.items():
            if table in drop:
                continue
            data = rows.get(table, [])
            if not data and table not in ("StringIds",):
                continue
            con.execute(f'CREATE TABLE "{table}" ({", ".join(f"{c} {_type(c)}" for c in cols)})')
            extra = {k for r in data for k in r} - set(cols)
            assert not extra or table.startswith("CUPTI") or table == "NVTX_EVENTS", (table, extra)
            con.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" for _ in cols)})', [tuple(r.get(c) for c in cols) for r in data])
        con.commit()
        con.close()
        return path


def _type(col: str) -> str:
    if col in ("value", "text", "name", "busLocation", "uuid", "jsonText", "devStateName", "label", "pciBusId"):
        return "TEXT"
    if col in ("doubleValue", "floatValue"):
        return "REAL"
    if col == "binaryData":
        return "BLOB"
    return "INTEGER"
