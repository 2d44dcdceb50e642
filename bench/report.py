"""Write the tables of docs/performance.md from bench/results/*.json.

Everything above the `<!-- notes -->` line of docs/performance.md is generated; the notes below
it (the bottleneck, what was done, what stands in the way) are written by a person and kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import ROOT, result_path

DOC = ROOT / "docs" / "performance.md"
MARKER = "<!-- notes -->"
RESULTS = (
    "overhead",
    "throughput",
    "throughput_count4",
    "concurrency",
    "peer",
    "scaling",
    "messaging_floor",
    "fairness",
    "watchers",
)

# JetStream messages one 1-image job costs, for the messaging floor of §6 (ADR 0018; pinned on the
# real stack by tests/e2e/test_job_hops.py).
# Consumed (each a delivery, a handler call and an ack): dispatch 3 (jobs.requested,
# jobs.enriched, media.landed), context 2 (jobs.requested, jobs.finished), the worker 1 (the
# task), media 1 (gen.completed), profiles 1 (jobs.finished).
CONSUMES_PER_IMAGE = 8
# Published (each with its PubAck): jobs.requested (gateway), jobs.enriched (context),
# gen.<provider>.requested and the "generating" jobs.status (dispatch), gen.completed (worker),
# media.landed (media), jobs.finished (dispatch). gen.started is a core-NATS notice, not counted.
PUBLISHES_PER_IMAGE = 7


def _load(name: str) -> dict[str, Any] | None:
    """The full run's result, else the last quick one (its command shows `--quick`)."""
    for path in (result_path(name, quick=False), result_path(name, quick=True)):
        if path.exists():
            loaded: dict[str, Any] = json.loads(path.read_text())
            return loaded
    return None


def _yes(value: bool) -> str:
    return "met" if value else "**missed**"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _sorted_by_cpu(per: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))


def _throughput_body(t: dict[str, Any]) -> list[str]:
    """The figures of one throughput run: images/s, the per-process table, the bottleneck."""
    return [
        f"**{t['images_per_s']} images/s** ({t['jobs_per_s']} jobs/s), thumbnails included; "
        f"{t['jobs_lost']} lost, {t['jobs_not_completed']} not completed; submissions "
        f"refused and retried: {t.get('submissions_refused') or 'none'}. Both cores: "
        f"{t['machine_cores_busy']} busy.",
        "",
        _row("process", "CPU ms per image", "cores used"),
        _row("---", "---", "---"),
        *[
            _row(k, v, t["cpu_cores_used"][k])
            for k, v in sorted(t["cpu_ms_per_image"].items(), key=lambda kv: -kv[1])
        ],
        _row("**all services**", t["services_cpu_ms_per_image"], ""),
        "",
        f"Bottleneck: {t['bottleneck']['note']}.",
        "",
    ]


def _floor(floor: dict[str, Any]) -> dict[str, float]:
    """The messaging floor (ms of CPU, client + nats-server) from messaging_floor's medians."""
    total = {row["scenario"]: row["total_us_per_msg"] / 1000 for row in floor["scenarios"]}
    consume, publish = total["consume_atelier_8"], total["publish_atelier_8"]
    return {
        "hop": total["hop_atelier_8"],
        "consume": consume,
        "publish": publish,
        "per_image": CONSUMES_PER_IMAGE * consume + PUBLISHES_PER_IMAGE * publish,
    }


def _messaging_floor(floor: dict[str, Any], throughput: dict[str, Any] | None) -> list[str]:
    """§6: every scenario of messaging_floor, and the floor it sets per image."""
    hop = next(row for row in floor["scenarios"] if row["scenario"] == "hop_atelier_8")
    f = _floor(floor)
    beside = (
        f" (§2 measured {throughput['services_cpu_ms_per_image']} ms per image for every "
        "process of the stack)"
        if throughput
        else ""
    )
    lines = [
        "## 6. The messaging floor: one hop",
        "",
        "CPU per message of our messaging stack alone: its own nats-server (JetStream, file "
        "storage), no services, every client in the bench process. "
        f"{floor['rounds']} rounds of {floor['messages_per_round']:,} messages per scenario "
        f"after {floor['warmup']} unmeasured, medians; each message a {floor['event']} "
        f"({floor['event_bytes']:,} bytes of JSON). Client µs is the bench process's CPU, "
        "server µs nats-server's (in 10 ms ticks: about ±5 µs per message).",
        "",
        _row("scenario", "workers", "msgs/s", "client µs", "server µs", "total µs", "what"),
        _row(*(["---"] * 7)),
        *[
            _row(
                r["scenario"],
                r["workers"],
                f"{r['msgs_per_s']:,.0f}",
                r["client_us_per_msg"],
                r["server_us_per_msg"],
                r["total_us_per_msg"],
                r["what"],
            )
            for r in floor["scenarios"]
        ],
        "",
        f"A hop as Atelier's services make it (consume + publish_event, 8 workers) costs "
        f"**{f['hop']:.2f} ms** of CPU ({hop['client_us_per_msg'] / 1000:.2f} client + "
        f"{hop['server_us_per_msg'] / 1000:.2f} nats-server); a 1-image job makes "
        f"{CONSUMES_PER_IMAGE} consumes and {PUBLISHES_PER_IMAGE} publishes, so its messaging "
        f"floor ≈ {CONSUMES_PER_IMAGE} \u00d7 {f['consume']:.3f} ms (consume_atelier_8) + "
        f"{PUBLISHES_PER_IMAGE} \u00d7 {f['publish']:.3f} ms (publish_atelier_8) = "
        f"**{f['per_image']:.1f} ms** of CPU per image{beside}.",
        "",
    ]
    return lines


def _wall(scenario: dict[str, Any]) -> str:
    wall = scenario["a"]["wall_to_last_landed_s"]
    return "none landed" if wall is None else f"{wall:.1f} s"


def _fairness_summary(f: dict[str, Any]) -> list[str]:
    """Rows of the summary: B's wait and the budget's peak with a budget, every call's wait
    without one."""
    rows = []
    with_budget, without = f["scenarios"].get("budget"), f["scenarios"].get("no_budget")
    if with_budget:
        t, b = with_budget["targets"], with_budget["b"]
        budget = with_budget["budget"]
        waits = b["submit_to_call_start_s"]
        rows += [
            _row(
                f"budget {budget}, A's {f['a_jobs']:,} jobs, B's {b['jobs']} jobs "
                f"{f['b_after_s']:g} s later: B's calls start after submission (max)",
                f"{max(waits):.1f} s" if waits else "none started",
                "≤ 5 s",
                _yes(t.get("b_calls_started_within_5s", False)),
            ),
            _row(
                "… provider calls at once, peak (tasks admitted and not done, peak)",
                f"{with_budget['peak_calls_running']} ({with_budget['peak_tasks_held']})",
                f"≤ {budget}",
                _yes(t["budget_never_exceeded"]),
            ),
            _row(
                "… A's jobs landed",
                f"{with_budget['a']['landed']:,} in {_wall(with_budget)}",
                "all",
                _yes(t["all_landed"]),
            ),
        ]
    if without:
        start = without["all_calls_submit_to_start_s"]
        rows.append(
            _row(
                f"no budget, {without['a']['jobs']:,} + {without['b']['jobs']} jobs: call "
                "starts after submission (p50 / p95 / max)",
                f"{start.get('p50', 0):.1f} / {start.get('p95', 0):.1f} / "
                f"{start.get('max', 0):.1f} s",
                "≤ 5 s",
                _yes(without["targets"]["every_call_started_within_5s"]),
            )
        )
    return rows


def _fairness(f: dict[str, Any]) -> list[str]:
    """§7: both scenarios side by side, and where the wait before a call went."""
    scenarios = list(f["scenarios"].values())

    def cells(pick: Any) -> list[object]:
        return [pick(s) for s in scenarios]

    def spread(stats: dict[str, float]) -> str:
        if not stats.get("n"):
            return "none"
        return f"{stats['p50']:.1f} / {stats['p95']:.1f} / {stats['max']:.1f}"

    lines = [
        f"## 7. Fairness: a provider budget and two users ({f['a_jobs']:,} jobs of A, "
        f"{f['b_jobs']} of B {f['b_after_s']:g} s later, provider takes "
        f"{f['provider_delay_s']:g} s, worker concurrency {f['worker_concurrency']:,})",
        "",
        f"User A submits {f['a_jobs']:,} 1-image jobs as fast as the gateway takes them; "
        f"{f['b_after_s']:g} s after A's first, user B (another user, another project) submits "
        f"{f['b_jobs']}. First with the {f['provider']} provider's budget at {f['budget']} calls "
        "at once (set through `PUT /admin/v1/providers/offline/budget`; dispatch admits one user "
        "at a time, ADR 0020), then on the same stack with the budget removed (`DELETE`). "
        "The worker could run every call at once, so only the budget limits calls. Calls at "
        f"once are counted on NATS ({f['calls_counted_by']}).",
        "",
        f"Run {f['when'][:16]} by `{f['command']}` on {f['machine']['cpu_model']} "
        f"({f['machine']['nproc']} cores), 1-min load average "
        f"{f['machine'].get('load_average_1_5_15', ['?'])[0]} when it was written (see **Load**: "
        "other work on the cores makes these waits upper bounds).",
        "",
    ]
    if f.get("aborted"):
        lines += [f"**Aborted**: {f['aborted']}.", ""]
    lines += [
        _row("", *cells(lambda s: f"**{s['scenario']}**")),
        _row(*(["---"] * (len(scenarios) + 1))),
        _row("budget (calls at once)", *cells(lambda s: s["budget"] or "none")),
        _row(
            "A: landed / submitted, wall time to the last",
            *cells(lambda s: f"{s['a']['landed']:,} / {s['a']['submitted']:,}, {_wall(s)}"),
        ),
        _row("A: submitting took", *cells(lambda s: f"{s['a']['submit_wall_s']} s")),
        _row("A: images/s", *cells(lambda s: s["a"]["images_per_s"])),
        _row("peak provider calls at once", *cells(lambda s: s["peak_calls_running"])),
        _row("peak tasks admitted and not done", *cells(lambda s: s["peak_tasks_held"])),
        _row(
            "every call: submit → call starts, s (p50 / p95 / max)",
            *cells(lambda s: spread(s["all_calls_submit_to_start_s"])),
        ),
        _row(
            "calls started within 5 s",
            *cells(lambda s: f"{s['calls_started_within_5s']:,} of {s['calls_started']:,}"),
        ),
        _row(
            "B: submitted at, A's jobs accepted before",
            *cells(lambda s: f"{s['b']['submitted_at_s']} s, {s['b']['a_accepted_before_b']:,}"),
        ),
        _row(
            "B: each call starts after submission, s",
            *cells(lambda s: ", ".join(f"{t:.1f}" for t in s["b"]["submit_to_call_start_s"])),
        ),
        _row(
            "submissions refused and retried (A, B)",
            *cells(
                lambda s: (
                    f"{s['submissions_refused']['A'] or 'none'}, "
                    f"{s['submissions_refused']['B'] or 'none'}"
                )
            ),
        ),
        "",
        "Where the wait before a call went, seconds from submission to each step as NATS shows "
        "it (p50 / p95 / max): the 202; `jobs.enriched` (context done); the first `generating` "
        "status (dispatch made the tasks; with a budget they wait for their turn from here); "
        "`gen.offline.requested` (admitted to the provider's queue); `gen.started`.",
        "",
        _row("step", *(f"{s['scenario']}: {who}" for s in scenarios for who in ("A", "B"))),
        _row(*(["---"] * (2 * len(scenarios) + 1))),
    ]
    steps = (
        ("202", "to_202"),
        ("enriched", "to_enriched"),
        ("taken in by dispatch", "to_taken_in_by_dispatch"),
        ("admitted", "to_handed_to_provider_queue"),
        ("call starts", "to_call_start"),
        ("landed", "to_landed"),
    )
    for label, key in steps:
        lines.append(
            _row(
                label,
                *(spread(s[who]["stages_s"].get(key, {})) for s in scenarios for who in "ab"),
            )
        )
    lines.append("")
    return lines


def _watchers_summary(w: dict[str, Any]) -> list[str]:
    """Rows of the summary: what the streams cost the gateway, and that they got and gave back
    everything."""
    g, t = w["gateway"], w["targets"]
    return [
        _row(
            f"{w['streams']:,} SSE streams open at once, one gateway: its RSS (a stream)",
            f"{g['rss_mib_no_streams']:g} → {g['rss_mib_streams_open']:g} MiB "
            f"({g['rss_kib_per_stream']:g} KiB)",
            "",
            "",
        ),
        _row(
            "… its CPU: open and idle / opening / while their jobs end",
            f"{g['cores_streams_open_idle']:g} cores / {g['cpu_ms_per_stream_opened']:g} ms a "
            f"stream / {g['cpu_us_per_event_delivered']:g} µs an event",
            "",
            "",
        ),
        _row(
            "… every stream saw its jobs end; subscriptions left after closing",
            f"{w['job_streams_ended_on_a_final_status'] + w['project_streams_saw_every_job_end']:,}"
            f" of {w['streams']:,}; {g['subscriptions_after_close']:g}",
            "all; 0",
            _yes(t["every_stream_complete"] and t["subscriptions_given_back"]),
        ),
    ]


def _watchers(w: dict[str, Any]) -> list[str]:
    """§8: the gateway, phase by phase, with the streams open."""
    g = w["gateway"]
    labels = {
        "idle_no_streams": "no stream, idle",
        "submitting_jobs": f"{w['jobs']} jobs submitted, held at the provider",
        "opening": f"{w['streams']:,} streams opening at once",
        "idle_streams_open": f"all open, idle ({w['pings_per_stream_in_idle_window']} pings "
        f"and {w['rereads_per_job_stream_in_idle_window']} re-read a stream)",
        "idle_until_the_first_job_ends": "… idle until the first job ends",
        "jobs_ending": "the jobs end (10 waves, 1 s apart)",
        "closed": "streams closed",
    }

    def rss(phase: dict[str, Any]) -> object:
        return phase.get("rss_mib", phase.get("peak_rss_mib", ""))

    rows = [
        _row(
            labels.get(name, name),
            p["wall_s"],
            p["gateway_cpu_s"],
            p["gateway_cores"],
            rss(p),
            f"{p['subscriptions']:g}" if "subscriptions" in p else "",
            p.get("fds", ""),
            p.get("events_delivered", p.get("events_in_window", "")),
        )
        for name, p in w["phases"].items()
    ]
    opening = w["phases"]["opening"]
    idle = w["phases"]["idle_streams_open"]
    return [
        f"## 8. Many watchers: {w['streams']:,} SSE streams on one gateway ({w['job_streams']:,} "
        f"on {w['jobs']} jobs, {w['project_streams']} on {w['projects']} projects)",
        "",
        f"Five streams on each job and {w['project_streams'] // w['projects']} on each project, "
        "all opened at once while their jobs wait at the offline provider; then the jobs end and "
        "every job's last events go to its job's and its project's streams; then every stream is "
        "closed. The gateway's own figures: CPU is `utime + stime` of its process, RSS its "
        "`VmRSS` (the peak sampled every 0.5 s while the jobs end), subscriptions its "
        "`atelier_status_subscriptions_open`, fds its open descriptors (a stream is a "
        f"connection). Run {w['when'][:16]} by `{w['command']}` on {w['machine']['cpu_model']} "
        f"({w['machine']['nproc']} cores), 1-min load average "
        f"{w['machine'].get('load_average_1_5_15', ['?'])[0]}.",
        "",
        _row("phase", "wall s", "CPU s", "cores", "RSS MiB", "subscriptions", "fds", "events"),
        _row(*(["---"] * 8)),
        *rows,
        "",
        f"Opening: every stream's headers within {opening['headers_after_s']['max']:g} s (p50 "
        f"{opening['headers_after_s']['p50']:g} s), **{g['cpu_ms_per_stream_opened']:g} ms** of "
        f"the gateway's CPU a stream. Open, each stream holds **{g['rss_kib_per_stream']:g} KiB** "
        f"of the gateway's memory; idle, the {w['streams']:,} cost {g['cores_streams_open_idle']:g}"
        f" of a core (pings every {w['ping_s']:g} s and each job stream's re-read of its job "
        f"after {w['resync_s']:g} s without an event: dispatch answered in "
        f"{idle['cpu_s'].get('dispatch', 0):g} s of its CPU). While the jobs end, "
        f"**{g['cpu_us_per_event_delivered']:g} µs** of the gateway's CPU an event delivered to a "
        f"stream ({w['phases']['jobs_ending']['events_delivered']:,} events). Closed, the "
        f"subscriptions are back to {g['subscriptions_after_close']:g} and the descriptors to "
        f"{g['fds_after_close']}; the RSS stays at {g['rss_mib_after_close']:g} MiB (Python keeps "
        "what it freed for reuse: a second thousand streams reuses it, "
        "`tests/reliability/test_watchers.py`). "
        f"{w['job_streams_ended_on_a_final_status']:,} of {w['job_streams']:,} job streams ended "
        f"on a final status, {w['project_streams_saw_every_job_end']} of "
        f"{w['project_streams']} project streams saw every job of their project end.",
        "",
    ]


def render() -> str:
    results = {name: _load(name) for name in RESULTS}
    overhead, throughput, throughput4 = (
        results["overhead"],
        results["throughput"],
        results["throughput_count4"],
    )
    concurrency, peer, scaling = results["concurrency"], results["peer"], results["scaling"]
    floor = results["messaging_floor"]
    fairness = results["fairness"]
    watchers = results["watchers"]
    present = {name: r for name, r in results.items() if r}
    lines = [
        "# Performance",
        "",
        "Atelier's own cost per image, beside the provider's 10-60 s. Measured by `make bench` "
        "(scripts in [`bench/`](../bench/README.md)) on the real stack: nats-server, SeaweedFS "
        "and every service as its own process, SQLite per service, the offline provider or the "
        "fake OpenAI server, all on 127.0.0.1. Raw figures: `bench/results/*.json`.",
        "",
    ]
    if present:
        m = next(iter(present.values()))["machine"]
        lines += [
            f"**Machine**: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
            f"Linux {m['kernel']}, Python {m['python']}. The load generator runs on the same "
            "cores as the stack (its CPU is listed as `bench-client`).",
            "",
            "**Load** (1-min load average when each result was written, the benchmark's own "
            "processes included): "
            + ", ".join(
                f"{name} {r['machine'].get('load_average_1_5_15', ['?'])[0]}"
                for name, r in present.items()
            )
            + ". A benchmark that keeps both cores busy reads 2-8 here by itself. This is a "
            "virtual machine whose speed drifts: the same commit measured 39-50 ms of CPU per "
            "image in quick runs an hour apart, so compare figures taken in one sitting (the "
            "notes below have an interleaved before/after).",
            "",
            "**Commands**: "
            + "; ".join(f"`{r['command']}` ({r['when'][:16]})" for r in present.values())
            + ". A `--quick` command marks a short run standing in for a full one not yet made.",
            "",
        ]
    lines += [
        "## Summary against the targets",
        "",
        _row("figure", "measured", "target", ""),
        _row("---", "---", "---", "---"),
    ]
    if overhead:
        o = overhead["overhead_ms"]
        lines.append(
            _row(
                "per-image overhead p50 (1 in flight, 64²)",
                f"{o['p50']:.1f} ms",
                "≤ 8.6 ms",
                _yes(o["p50"] <= 8.6),
            )
        )
        lines.append(
            _row("per-image overhead p99", f"{o['p99']:.1f} ms", "≤ 50 ms", _yes(o["p99"] <= 50))
        )
    if throughput:
        lines.append(
            _row(
                "images/s sustained 60 s, thumbnails included",
                throughput["images_per_s"],
                "≥ 130",
                _yes(throughput["images_per_s"] >= 130),
            )
        )
        lines.append(
            _row(
                "CPU per image, all services",
                f"{throughput['services_cpu_ms_per_image']} ms",
                "≤ 8 ms",
                _yes(throughput["services_cpu_ms_per_image"] <= 8),
            )
        )
    if throughput4:
        per_job = f"({throughput4['count_per_job']} per job)"
        lines.append(
            _row(
                f"images/s sustained, thumbnails included {per_job}",
                throughput4["images_per_s"],
                "",
                "",
            )
        )
        lines.append(
            _row(
                f"CPU per image, all services {per_job}",
                f"{throughput4['services_cpu_ms_per_image']} ms",
                "",
                "",
            )
        )
    if floor:
        lines.append(
            _row(
                f"messaging floor per 1-image job ({CONSUMES_PER_IMAGE} consumes + "
                f"{PUBLISHES_PER_IMAGE} publishes)",
                f"{_floor(floor)['per_image']:.1f} ms",
                "",
                "",
            )
        )
    if concurrency:
        start = concurrency["submit_to_provider_start_ms"]
        lines.append(
            _row(
                f"{concurrency['jobs']:,} jobs in flight, "
                f"{concurrency['provider_delay_s']:g} s provider: landed",
                f"{concurrency['landed']:,} in {concurrency['wall_s']} s",
                "all",
                _yes(concurrency["targets"]["all_landed"]),
            )
        )
        lines.append(
            _row(
                "… provider call starts after submission (p50 / max)",
                f"{start.get('p50', 0) / 1000:.1f} s / {start.get('max', 0) / 1000:.1f} s",
                "≤ 5 s",
                _yes(concurrency["targets"]["every_call_started_within_5s"]),
            )
        )
    if peer:
        for level in peer["by_concurrency"]:
            ratio = level["atelier_vs_litellm"]
            lines.append(
                _row(
                    f"Atelier ÷ LiteLLM overhead p50, c={level['concurrency']}",
                    f"{ratio['overhead_p50_ratio']}x",
                    "≤ 1x",
                    _yes(ratio["overhead_p50_ratio"] <= 1),
                )
            )
            lines.append(
                _row(
                    f"Atelier ÷ LiteLLM CPU per request, c={level['concurrency']}",
                    f"{ratio['cpu_per_request_ratio']}x",
                    "≤ 1x",
                    _yes(ratio["cpu_per_request_ratio"] <= 1),
                )
            )
    if fairness:
        lines += _fairness_summary(fairness)
    if watchers:
        lines += _watchers_summary(watchers)
    lines.append("")

    if overhead:
        lat, direct = overhead["submit_to_landed_ms"], overhead["direct_adapter_ms"]
        o = overhead["overhead_ms"]
        lines += [
            f"## 1. Overhead ({overhead['jobs']} jobs, {overhead['in_flight']} in flight, "
            f"{overhead['size']}, offline provider)",
            "",
            _row("", "p50", "p95", "p99", "mean"),
            _row("---", "---", "---", "---", "---"),
            _row(
                "submit → landed (stack)", lat["p50"], lat["p95"], lat["p99"], round(lat["mean"], 1)
            ),
            _row(
                "direct in-process adapter call",
                direct["p50"],
                direct["p95"],
                direct["p99"],
                round(direct["mean"], 2),
            ),
            _row("**overhead** (difference), ms", o["p50"], o["p95"], o["p99"], o["mean"]),
            _row(
                "submit → 202 (part of the above)",
                overhead["submit_to_202_ms"]["p50"],
                overhead["submit_to_202_ms"]["p95"],
                overhead["submit_to_202_ms"]["p99"],
                round(overhead["submit_to_202_ms"]["mean"], 1),
            ),
            "",
            f"Ratio stack ÷ direct at p50: {overhead['ratio_p50']}x. CPU per image at this load, "
            f"ms: {_sorted_by_cpu(overhead['cpu_ms_per_image'])} (services "
            f"{overhead['services_cpu_ms_per_image']} ms).",
            "",
        ]
    if throughput:
        t = throughput
        lines += [
            f"## 2. Throughput ({t['seconds']} s, {t['in_flight']} jobs in flight, "
            f"{t['size']}, {t['count_per_job']} image per job)",
            "",
            *_throughput_body(t),
        ]
    if throughput4:
        t = throughput4
        if not throughput:
            lines += ["## 2. Throughput", ""]
        lines += [
            f"### {t['count_per_job']} images per job ({t['seconds']} s, {t['in_flight']} jobs "
            f"in flight, {t['size']})",
            "",
            f"The same benchmark with `--count {t['count_per_job']}`: each job's CPU is divided "
            f"by its {t['count_per_job']} images.",
            "",
            *_throughput_body(t),
        ]
    if concurrency:
        c = concurrency
        s, landed = c["submit_to_provider_start_ms"], c["overhead_beyond_delay_ms"]
        lines += [
            f"## 3. Concurrency ({c['jobs']:,} jobs, provider takes {c['provider_delay_s']:g} s, "
            f"worker concurrency {c['worker_concurrency']})",
            "",
            f"Landed **{c['landed']:,} of {c['jobs']:,}** (statuses {c['statuses']}); wall time "
            f"**{c['wall_s']} s** (submitting took {c['submit_wall_s']} s). Peak jobs in flight "
            f"{c['peak_jobs_in_flight']:,}; peak provider calls running at once "
            f"{c['peak_provider_calls_running']}; {c['started_within_5s']:,} provider calls "
            "started within 5 s of submission. Submissions refused and retried: "
            f"{c.get('submissions_refused') or 'none'}.",
            "",
            _row("", "p50", "p95", "p99", "max"),
            _row("---", "---", "---", "---", "---"),
            _row(
                "submit → provider call starts, s",
                *(round(s.get(k, 0) / 1000, 1) for k in ("p50", "p95", "p99", "max")),
            ),
            _row(
                "submit → landed - provider time, s",
                *(round(landed.get(k, 0) / 1000, 1) for k in ("p50", "p95", "p99", "max")),
            ),
            "",
            _row("process", "peak RSS MiB (sampled)", "VmHWM MiB"),
            _row("---", "---", "---"),
            *[
                _row(k, v, c["peak_rss_mib_vmhwm"].get(k, ""))
                for k, v in c["peak_rss_mib_sampled"].items()
            ],
            "",
        ]
    if peer:
        lines += [
            f"## 4. Peer: Atelier vs LiteLLM {peer['litellm_version']} (fake OpenAI, "
            f"{peer['model']}, {peer['image_size']}, interleaved)",
            "",
            f"Atelier's side: {peer['atelier_route']}. LiteLLM: one proxy worker, master key, "
            "offline cost map. Overhead = latency - the direct call to the fake at the same "
            "concurrency; CPU = the proxy's own processes (for Atelier every service, NATS and "
            "SeaweedFS).",
            "",
            _row(
                "c",
                "target",
                "p50 ms",
                "p99 ms",
                "overhead p50 ms",
                "overhead p99 ms",
                "req/s",
                "CPU ms/req",
            ),
            _row(*(["---"] * 8)),
        ]
        for level in peer["by_concurrency"]:
            for name in ("direct", "litellm", "atelier", "atelier_openai"):
                if name not in level:  # results written before the OpenAI route was measured
                    continue
                r = level[name]
                lines.append(
                    _row(
                        level["concurrency"],
                        name,
                        r["latency_ms"]["p50"],
                        r["latency_ms"]["p99"],
                        r["overhead_p50_ms"],
                        r["overhead_p99_ms"],
                        r["requests_per_s"],
                        r["cpu_ms_per_request"],
                    )
                )
        lines += [
            "",
            _row(
                "c",
                "Atelier route",
                "overhead p50 ratio",
                "overhead p99 ratio",
                "throughput ratio",
                "CPU/request ratio",
            ),
            _row(*(["---"] * 6)),
        ]
        for level in peer["by_concurrency"]:
            for key, route in (("atelier_vs_litellm", "atelier"), ("openai_vs_litellm", "openai")):
                if key not in level:
                    continue
                r = level[key]
                lines.append(
                    _row(
                        level["concurrency"],
                        route,
                        f"{r['overhead_p50_ratio']}x",
                        f"{r['overhead_p99_ratio']}x",
                        f"{r['throughput_ratio']}x",
                        f"{r['cpu_per_request_ratio']}x",
                    )
                )
        lines.append("")
    if scaling:
        lines += [
            "## 5. Scaling",
            "",
            "Jobs in flight (closed loop, 64², offline; the latency includes waiting behind the "
            "other jobs):",
            "",
            _row(
                "in flight",
                "landed p50 ms",
                "landed p99 ms",
                "submit→202 p50 ms",
                "images/s",
                "CPU ms/image",
            ),
            _row(*(["---"] * 6)),
        ]
        for p in scaling["by_in_flight"]:
            lat = p["submit_to_landed_ms"]
            lines.append(
                _row(
                    p["in_flight"],
                    lat["p50"],
                    lat["p99"],
                    p["submit_to_202_ms"]["p50"],
                    p["images_per_s"],
                    p["services_cpu_ms_per_image"],
                )
            )
        if concurrency:
            landed = concurrency["overhead_beyond_delay_ms"]
            lines.append(
                _row(
                    f"{concurrency['jobs']:,} (§3, landed - {concurrency['provider_delay_s']:g} s)",
                    landed.get("p50"),
                    landed.get("p99"),
                    "",
                    "",
                    "",
                )
            )
        lines += [
            "",
            "Image size (1 in flight):",
            "",
            _row(
                "size",
                "direct adapter p50 ms",
                "landed p50 ms",
                "overhead p50 ms",
                "overhead p99 ms",
            ),
            _row(*(["---"] * 5)),
        ]
        for p in scaling["by_size"]:
            lines.append(
                _row(
                    p["size"],
                    p["direct_adapter_ms"]["p50"],
                    p["submit_to_landed_ms"]["p50"],
                    p["overhead_p50_ms"],
                    p["overhead_p99_ms"],
                )
            )
        lines.append("")
    if floor:
        lines += _messaging_floor(floor, throughput)
    if fairness:
        lines += _fairness(fairness)
    if watchers:
        lines += _watchers(watchers)
    return "\n".join(lines)


def write_report(path: Path = DOC) -> Path:
    notes = ""
    if path.exists() and MARKER in path.read_text():
        notes = path.read_text().split(MARKER, 1)[1]
    path.write_text(render() + "\n" + MARKER + (notes or "\n\n## Notes\n\n(to be written)\n"))
    return path


if __name__ == "__main__":
    print(write_report())
