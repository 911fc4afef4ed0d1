"""``journey bench``: measure the worker against a naive Faust agent and a raw consumer.

Phases, one after another on the local stack (Kafka and the ClickHouse server):

1. generate N events (the ``journey generate`` traffic model) into a JSONL file and a
   fresh topic (fast aiokafka batch producer, keyed by visitor);
2. ``raw``: a plain aiokafka consumer decoding every event (the upper bound);
   ``naive``: a straightforward Faust agent, one insert per closed session;
   ``worker``: ``journey worker`` end to end until every event is visible in ClickHouse;
   ``replay``: ``journey replay``'s engine over the file into chdb and into the server;
3. ``latency``: event time to ClickHouse-visible and to the Prometheus counter at a paced rate;
4. ``memory``: worker RSS per open session;
5. ``soak`` (only with ``--soak-minutes N``): N minutes of generated traffic at 50% of the
   measured capacity, with latency, RSS and bytes per open session for every minute.

Progress goes to stderr; the result is a markdown table, or one JSON object with
``--json``. Every process, topic, consumer group, database and folder the bench creates is
removed at the end, whatever happened. Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

PHASES = ("raw", "naive", "worker", "replay", "latency", "memory")
T = TypeVar("T")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``journey bench``."""
    parser = sub.add_parser(
        "bench",
        help="benchmark the worker (throughput, latency, memory) on the local stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--events",
        type=_positive_int,
        default=1_000_000,
        help="events generated for the throughput phases (default 1000000)",
    )
    parser.add_argument(
        "--span-hours",
        type=_positive_float,
        default=2.0,
        help="event time the generated events cover, ending now (default 2: 1M events are "
        "~140 events/s of a busy store, and most sessions close while the stream runs, "
        "so the naive agent does its per-session inserts)",
    )
    parser.add_argument(
        "--partitions",
        type=_positive_int,
        default=4,
        help="partitions of the input topics and the worker (default 4)",
    )
    parser.add_argument(
        "--naive-events",
        type=_positive_int,
        default=None,
        help="events the naive agent must consume (default: all --events)",
    )
    parser.add_argument(
        "--latency-rate",
        type=_rate,
        default=5000.0,
        help="paced events per second in the latency phase (default 5000), or 'auto': two "
        "runs, at 50%% and at 80%% of the end-to-end throughput the worker phase measured",
    )
    parser.add_argument(
        "--latency-seconds",
        type=_positive_float,
        default=60.0,
        help="length of the paced run (default 60)",
    )
    parser.add_argument(
        "--latency-warmup",
        type=float,
        default=5.0,
        help="seconds of the paced run left out of the percentiles (default 5)",
    )
    parser.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="with 2 or more, the worker phase also runs that many worker processes of one "
        "app (one consumer group) and reports their aggregate throughput beside one's",
    )
    parser.add_argument(
        "--soak-minutes",
        type=int,
        default=0,
        help="after the other phases, send generated traffic for N minutes at 50%% of the "
        "end-to-end throughput the worker phase measured (or at a numeric --latency-rate "
        "when that phase is skipped) and report latency and memory per minute (default 0: "
        "no soak)",
    )
    parser.add_argument(
        "--memory-sessions",
        type=_positive_int,
        default=1_000_000,
        help="open sessions (one-event visitors) of the memory phase",
    )
    parser.add_argument(
        "--flush-interval",
        type=_positive_float,
        default=2.0,
        help="JOURNEY_FLUSH_INTERVAL_S of the workers started (default 2)",
    )
    parser.add_argument(
        "--hop",
        action="store_true",
        help="run the workers with input through the by-visitor topic (the path for input "
        "not keyed by visitor); by default they read it directly "
        "(JOURNEY_INPUT_KEYED_BY_VISITOR=true: the bench's producer keys by visitor)",
    )
    parser.add_argument(
        "--phase-timeout",
        type=_positive_float,
        default=900.0,
        help="upper bound in seconds of every wait of a phase (default 900)",
    )
    parser.add_argument(
        "--skip", default="", help=f"comma-separated phases to skip: {', '.join(PHASES)}"
    )
    parser.add_argument("--seed", type=int, default=1, help="traffic model seed (default 1)")
    parser.add_argument(
        "--brokers",
        default=None,
        help="Kafka bootstrap servers (default JOURNEY_BROKERS); every client of the run "
        "connects with the JOURNEY_KAFKA_* security settings",
    )
    parser.add_argument(
        "--clickhouse",
        default=None,
        help="ClickHouse server base URL clickhouse://host:9000 (databases "
        "jb_<tag>_* are created and dropped); default from "
        "JOURNEY_CLICKHOUSE_URL, else clickhouse://127.0.0.1:9000",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy the worker during the worker phase into FILE (raw "
        "format) and print where its time goes",
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the work folder (JSONL file, process logs) for inspection",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)  # fmt: skip


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{raw!r} must be greater than zero")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{raw!r} must be greater than zero")
    return value


#: Shares of the measured throughput the latency phase runs at with ``--latency-rate auto``.
AUTO_SHARES = (0.5, 0.8)


def _rate(raw: str) -> float | str:
    if raw == "auto":
        return raw
    return _positive_float(raw)


def _skipped(raw: str) -> set[str]:
    from streams.errors import ConfigError

    names = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = sorted(names - set(PHASES))
    if unknown:
        raise ConfigError(f"--skip: unknown phase(s) {', '.join(unknown)}; known: {PHASES}")
    return names


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the phases not skipped; print the table or JSON; 1 if any phase failed."""
    from dataclasses import replace

    from streams.bench import environment
    from streams.bench.resources import BenchResources
    from streams.clickhouse.address import server_address, server_base
    from streams.settings import Settings

    settings = Settings.from_env()
    skip = _skipped(args.skip)
    # Every client of the run, the workers and the naive agent included, connects with
    # these: --brokers over JOURNEY_BROKERS, the JOURNEY_KAFKA_* security settings, and the
    # ClickHouse password file and TLS settings.
    settings = replace(settings, brokers=args.brokers or settings.brokers)
    base = server_base(args.clickhouse or settings.clickhouse_url or "clickhouse://127.0.0.1:9000")
    result: dict[str, Any] = {
        "events": args.events,
        "worker_input": "by-visitor topic" if args.hop else "direct",
        "skipped": sorted(skip),
        "errors": {},
        "machine": environment.machine(),
        "versions": environment.versions(server_address(f"{base}/default", settings)),
    }
    # SIGTERM (a CI timeout, `kill`) cleans up like Ctrl-C instead of leaving processes.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with BenchResources(
            settings, base, keep_workdir=args.keep_workdir, direct=not args.hop
        ) as res:
            _run_with(args, res, skip, result)
    finally:
        signal.signal(signal.SIGTERM, previous)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    _finish(result)
    if args.json:
        print(json.dumps(_json_safe(result), indent=2, sort_keys=True))
    else:
        print(format_table(result))
    return 1 if result["errors"] else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run_with(args: argparse.Namespace, res: Any, skip: set[str], result: dict[str, Any]) -> None:
    """The phases inside the resources' context; an interrupt is recorded, not raised."""
    _say(f"work folder {res.workdir}; run tag {res.tag}")
    result["run_tag"] = res.tag
    try:
        _run_phases(args, res, skip, result)
    except KeyboardInterrupt:
        result["errors"]["interrupted"] = "stopped by the operator"
    if result["errors"] and not args.keep_workdir:
        # The process logs are what explains a failure: keep them.
        res.keep_workdir = True
        _say(f"a phase failed; logs kept in {res.workdir}")


def _phase(name: str, result: dict[str, Any], action: Callable[[], T]) -> T | None:
    """Run one phase; a failure is recorded in ``result['errors']`` and the bench goes on."""
    from streams.errors import JourneyError

    _say(f"{name} ...")
    started = time.monotonic()
    try:
        value = action()
    except (JourneyError, OSError, TimeoutError, LookupError) as exc:
        result["errors"][name] = str(exc)
        _say(f"{name} FAILED: {exc}")
        return None
    except Exception as exc:  # a client's own error (Kafka, ClickHouse): the run goes on
        result["errors"][name] = f"{type(exc).__name__}: {exc}"
        _say(f"{name} FAILED: {type(exc).__name__}: {exc}")
        return None
    _say(f"{name} done in {time.monotonic() - started:.1f} s")
    return value


def _run_phases(args: argparse.Namespace, res: Any, skip: set[str], result: dict[str, Any]) -> None:
    from streams.bench import data, latency, memory, raw, throughput
    from streams.bench.producer import produce_bulk

    timeout = args.phase_timeout
    needs_data = bool({"raw", "naive", "worker", "replay"} - skip)
    if needs_data:
        generated = _phase(
            "generate",
            result,
            lambda: data.generate(
                args.events,
                args.events / (args.span_hours * 3600),
                args.seed,
                res.workdir / "events.jsonl",
            ),
        )
        if generated is None:
            return
        result["generate_events_per_s"] = generated.events / generated.seconds
        topic = res.create_topic("input", args.partitions)
        produced = _phase(
            "produce",
            result,
            lambda: asyncio.run(
                produce_bulk(
                    res.connection, topic, args.partitions, generated.keys, generated.values,
                    timeout_s=timeout,
                )
            ),
        )  # fmt: skip
        # The bench needs only the file from here on; free the in-memory copy.
        generated.keys.clear()
        generated.values.clear()
        if produced is None:
            return
        result["produce_events_per_s"] = produced.per_s
        result["produced_events"] = produced.records
        n = produced.records
        if "raw" not in skip:
            consumed = _phase(
                "raw",
                result,
                lambda: asyncio.run(raw.consume_raw(res.connection, topic, n, timeout_s=timeout)),
            )
            if consumed is not None:
                result["raw_consume_events_per_s"] = consumed.per_s
                result["raw"] = {"events": consumed.events, "seconds": consumed.seconds}
        if "naive" not in skip:
            naive_n = min(n, args.naive_events or n)
            naive = _phase(
                "naive",
                result,
                lambda: throughput.run_naive(res, topic, naive_n, timeout_s=timeout),
            )
            if naive is not None:
                result["naive_faust_events_per_s"] = naive.per_s
                result["naive"] = {
                    "events": naive.events,
                    "seconds": naive.seconds,
                    "inserts": naive.inserts,
                    "complete": naive.complete,
                }
        if "worker" not in skip:
            run_worker = functools.partial(
                throughput.run_worker, res, topic, n, partitions=args.partitions,
                flush_interval_s=args.flush_interval, timeout_s=timeout,
            )  # fmt: skip
            worker = _phase("worker", result, lambda: run_worker(profile_path=args.profile))
            if worker is not None:
                result["events_per_s"] = worker.per_s
                result["worker"] = _worker_record(worker)
                if worker.profile:
                    result["worker_profile"] = worker.profile
            if args.processes > 1:
                group = _phase(
                    f"worker x{args.processes}",
                    result,
                    lambda: run_worker(processes=args.processes),
                )
                if group is not None:
                    result["processes_events_per_s"] = group.per_s
                    result["workers"] = {"processes": args.processes, **_worker_record(group)}
        if "replay" not in skip:
            path = res.workdir / "events.jsonl"
            embedded = _phase(
                "replay (chdb)",
                result,
                lambda: throughput.run_replay(path, str(res.folder("replay-chdb"))),
            )
            if embedded is not None:
                result["replay_events_per_s"] = embedded.per_s
            server = _phase(
                "replay (server)",
                result,
                lambda: throughput.run_replay(path, res.database_url("replay")),
            )
            if server is not None:
                result["replay_server_events_per_s"] = server.per_s
    if "latency" not in skip:
        runs = _latency_rates(args.latency_rate, result)
        for share, rate in runs:
            name = "latency" if share is None else f"latency at {share:.0%}"
            label = "latency" if share is None else f"latency{round(share * 100)}"
            lat = _phase(
                name,
                result,
                lambda rate=rate, label=label: latency.run_latency(  # type: ignore[misc]
                    res, rate=rate, seconds=args.latency_seconds,
                    warmup_s=args.latency_warmup, partitions=args.partitions,
                    flush_interval_s=args.flush_interval, seed=args.seed, timeout_s=timeout,
                    label=label,
                ),
            )  # fmt: skip
            if lat is None:
                continue
            record = {
                "share": share,
                "rate": lat.rate,
                "events": lat.events,
                "p50_s": lat.clickhouse_p50_s,
                "p99_s": lat.clickhouse_p99_s,
                "clickhouse_max_s": lat.clickhouse_max_s,
                "prometheus_p50_s": lat.prometheus_p50_s,
                "prometheus_p99_s": lat.prometheus_p99_s,
                "producer_delay_p99_s": lat.producer_delay_p99_s,
                "unseen": lat.unseen,
                "flush_interval_s": lat.flush_interval_s,
                "worker_cpu_us_per_event": lat.worker_cpu_us_per_event,
            }
            result.setdefault("latency_runs", []).append(record)
            if share is None or share == AUTO_SHARES[0]:
                result["latency_p50_s"] = lat.clickhouse_p50_s
                result["latency_p99_s"] = lat.clickhouse_p99_s
                result["prometheus_latency_p99_s"] = lat.prometheus_p99_s
                result["live_cpu_us_per_event"] = lat.worker_cpu_us_per_event
                result["latency"] = {
                    k: record[k]
                    for k in ("rate", "events", "clickhouse_max_s", "prometheus_p50_s",
                              "producer_delay_p99_s", "unseen", "flush_interval_s")
                }  # fmt: skip
            else:
                result["latency_80_p99_s"] = lat.clickhouse_p99_s
    if "memory" not in skip:
        mem = _phase(
            "memory",
            result,
            lambda: memory.run_memory(
                res, count=args.memory_sessions, partitions=args.partitions,
                flush_interval_s=args.flush_interval, seed=args.seed, timeout_s=timeout,
            ),
        )  # fmt: skip
        if mem is not None:
            result["bytes_per_open_session"] = mem.bytes_per_session
            result["memory"] = {
                "sessions": mem.sessions,
                "rss_before": mem.rss_before,
                "rss_after": mem.rss_after,
                "open_before": mem.open_before,
                "open_after": mem.open_after,
            }

    if args.soak_minutes > 0:
        _soak(args, res, result)


#: Share of the measured throughput the soak runs at.
SOAK_SHARE = 0.5


def _soak(args: argparse.Namespace, res: Any, result: dict[str, Any]) -> None:
    """The soak phase, at 50% of the measured throughput (or the numeric --latency-rate)."""
    from streams.bench import soak

    measured = result.get("events_per_s")
    if measured:
        rate = measured * SOAK_SHARE
    elif args.latency_rate != "auto":
        rate = float(args.latency_rate)
    else:
        result["errors"]["soak"] = (
            "--soak-minutes needs the worker phase's throughput or a numeric --latency-rate"
        )
        return
    run = _phase(
        f"soak, {args.soak_minutes} min at {rate:,.0f} events/s",
        result,
        lambda: soak.run_soak(
            res, rate=rate, minutes=args.soak_minutes, partitions=args.partitions,
            flush_interval_s=args.flush_interval, seed=args.seed,
            timeout_s=args.phase_timeout,
        ),
    )  # fmt: skip
    if run is None:
        return
    result["soak_worst_p99_s"] = run.worst_p99_s
    result["soak_bytes_per_open_session"] = run.bytes_per_open_session
    result["soak"] = {
        "rate": run.rate,
        "share": SOAK_SHARE if measured else None,
        "flush_interval_s": run.flush_interval_s,
        "minutes": [
            {"minute": m.minute, "events": m.events, "p50_s": m.p50_s, "p99_s": m.p99_s,
             "unseen": m.unseen, "rss_bytes": m.rss_bytes, "open_sessions": m.open_sessions,
             "bytes_per_open_session": m.bytes_per_open_session}
            for m in run.minutes
        ],
    }  # fmt: skip


def _worker_record(worker: Any) -> dict[str, Any]:
    """The JSON record of a worker phase."""
    return {
        "events": worker.events,
        "consumed_s": worker.consumed_s,
        "visible_s": worker.visible_s,
        "startup_s": worker.startup_s,
        "cpu_s": worker.cpu_s,
        "events_per_cpu_s": worker.events / worker.cpu_s if worker.cpu_s else None,
        "late": worker.late,
        "duplicates": worker.duplicates,
    }


def _latency_rates(option: float | str, result: dict[str, Any]) -> list[tuple[float | None, float]]:
    """(share of the measured throughput or None, rate) of each latency run."""
    if option != "auto":
        return [(None, float(option))]
    measured = result.get("events_per_s")
    if not measured:
        result["errors"]["latency"] = (
            "--latency-rate auto needs the worker phase's throughput (not skipped, not failed)"
        )
        return []
    return [(share, measured * share) for share in AUTO_SHARES]


#: The summary keys, always present (null when skipped or failed).
SUMMARY_KEYS = (
    "events_per_s",
    "naive_faust_events_per_s",
    "raw_consume_events_per_s",
    "replay_events_per_s",
    "replay_server_events_per_s",
    "latency_p50_s",
    "latency_p99_s",
    "prometheus_latency_p99_s",
    "bytes_per_open_session",
    "latency_80_p99_s",
    "soak_worst_p99_s",
    "soak_bytes_per_open_session",
)


def _finish(result: dict[str, Any]) -> None:
    """Fill missing summary keys with None and add the ratios the targets speak of."""
    for key in SUMMARY_KEYS:
        result.setdefault(key, None)
    ours = result["events_per_s"]
    naive = result["naive_faust_events_per_s"]
    raw = result["raw_consume_events_per_s"]
    result["ratio_worker_to_naive"] = ours / naive if ours and naive else None
    result["ratio_worker_to_raw"] = ours / raw if ours and raw else None
    result["figures"] = figures(result)


def _json_safe(value: Any) -> Any:
    """NaN and infinity become null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value:,.0f}"


def figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every reported figure with its target and whether it is met (None: no target or value).

    One list for the table and for ``--json`` (``result["figures"]``), so that every
    figure is printed next to its target in both.
    """
    runs = result.get("latency_runs") or [{}]
    flush = float(runs[0].get("flush_interval_s") or 2.0)
    bound = 2 + flush
    worker = result.get("worker") or {}
    naive = result.get("naive") or {}
    raw = result.get("raw_consume_events_per_s")
    replay = result.get("replay_events_per_s")
    auto = any(run.get("share") for run in runs)
    at = " at 50% of capacity" if auto else ""
    soak = result.get("soak") or {}
    soak_bound = 2 + float(soak.get("flush_interval_s") or flush)
    soak_at = f" ({len(soak.get('minutes', []))} min" + (
        ", 50% of capacity)" if soak.get("share") else f" at {soak.get('rate', 0):,.0f}/s)"
    )

    def at_least(bound: float) -> Callable[[Any], bool]:
        return lambda value: bool(value >= bound)

    def at_most(bound: float) -> Callable[[Any], bool]:
        return lambda value: bool(value <= bound)

    rows: list[tuple[str, str, Any, str, str, Callable[[Any], bool] | None]] = [
        ("events_per_s", "worker, end to end (events/s)", result.get("events_per_s"), "", "",
         None),
        ("events_per_cpu_s", "worker, per CPU-second of its process",
         worker.get("events_per_cpu_s"), "", ">= 50,000", at_least(50_000)),
        ("processes_events_per_s",
         f"{(result.get('workers') or {}).get('processes', 2)} worker processes, end to end "
         "(events/s)", result.get("processes_events_per_s"), "", "", None),
        ("naive_faust_events_per_s", "naive Faust agent (events/s)",
         result.get("naive_faust_events_per_s"), "", "", None),
        ("naive_inserts", "naive agent's session inserts", naive.get("inserts"), "", "> 0",
         lambda value: bool(value > 0)),
        ("raw_consume_events_per_s", "raw aiokafka consume + orjson (events/s)", raw, "", "",
         None),
        ("ratio_worker_to_naive", "worker / naive", result.get("ratio_worker_to_naive"), "x",
         ">= 5x", at_least(5)),
        ("ratio_worker_to_raw", "worker / raw", result.get("ratio_worker_to_raw"), "x",
         ">= 0.25x", at_least(0.25)),
        ("late", "late events, worker phase (in-order input)", worker.get("late"), "", "0",
         at_most(0)),
        ("replay_events_per_s", "replay into chdb (events/s)", replay, "", ">= 100,000",
         at_least(100_000)),
        ("replay_server_events_per_s", "replay into ClickHouse server (events/s)",
         result.get("replay_server_events_per_s"), "", ">= 100,000", at_least(100_000)),
        ("ratio_replay_to_raw", "replay (chdb) / raw", replay / raw if replay and raw else None,
         "x", ">= 0.35x", at_least(0.35)),
        ("latency_p50_s", f"event to ClickHouse p50{at}", result.get("latency_p50_s"), "s",
         "", None),
        ("latency_p99_s", f"event to ClickHouse p99{at}", result.get("latency_p99_s"), "s",
         f"<= {bound:.1f} s (2 s + flush)", at_most(bound)),
        ("latency_80_p99_s", "event to ClickHouse p99 at 80% of capacity",
         result.get("latency_80_p99_s"), "s", f"<= {3 * bound:.1f} s (3 x (2 s + flush))",
         at_most(3 * bound)),
        ("prometheus_latency_p99_s", f"event to Prometheus counter p99{at}",
         result.get("prometheus_latency_p99_s"), "s", "", None),
        ("live_cpu_us_per_event", f"worker CPU per live event{at} (us)",
         result.get("live_cpu_us_per_event"), "", "", None),
        ("bytes_per_open_session", "bytes per open session", result.get("bytes_per_open_session"),
         "B", "<= 1,024 B", at_most(1024)),
        ("soak_worst_p99_s", f"event to ClickHouse p99, worst minute of the soak{soak_at}",
         result.get("soak_worst_p99_s"), "s", f"<= {soak_bound:.1f} s (2 s + flush)",
         at_most(soak_bound)),
        ("soak_bytes_per_open_session", "bytes per open session at the end of the soak",
         result.get("soak_bytes_per_open_session"), "B", "<= 1,024 B", at_most(1024)),
    ]  # fmt: skip
    out = []
    for key, label, value, unit, target, check in rows:
        finite = value is not None and not (isinstance(value, float) and not math.isfinite(value))
        met = check(value) if check is not None and finite else None
        out.append({"key": key, "figure": label, "value": value, "unit": unit,
                    "target": target, "met": met})  # fmt: skip
    return out


def format_table(result: dict[str, Any]) -> str:
    """The markdown table of a result, with each figure's target and whether it is met."""

    def met(ok: bool | None) -> str:
        return "-" if ok is None else ("yes" if ok else "no")

    rows = [(f["figure"], _fmt(f["value"], f["unit"]), f["target"], met(f["met"]))
            for f in result["figures"]]  # fmt: skip
    lines = ["| figure | value | target | met |", "|---|---:|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    machine = result["machine"]
    lines.append("")
    lines.append(
        f"N = {result['events']:,} events; {machine['cores']} cores, {machine['cpu_model']}; "
        f"load average at start {machine['load_average']}, at end {result['load_average_end']}"
    )
    lines.append(
        f"workers' input: {result.get('worker_input', 'direct')} "
        "(JOURNEY_INPUT_KEYED_BY_VISITOR; --hop for the by-visitor topic)"
    )
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    soak = result.get("soak")
    if soak:
        lines.append("")
        lines.append(f"Soak at {soak['rate']:,.0f} events/s, per minute:")
        lines.append("")
        lines.append("| minute | p50 | p99 | RSS | open sessions | bytes per open session |")
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for m in soak["minutes"]:
            lines.append(
                f"| {m['minute']} | {_fmt(m['p50_s'], 's')} | {_fmt(m['p99_s'], 's')} | "
                f"{m['rss_bytes'] / 2**20:,.0f} MiB | {m['open_sessions']:,} | "
                f"{_fmt(m['bytes_per_open_session'], 'B')} |"
            )
    for name, message in result["errors"].items():
        lines.append(f"FAILED {name}: {message}")
    for line in result.get("worker_profile", []):
        lines.append(f"    {line}")
    return "\n".join(lines)
