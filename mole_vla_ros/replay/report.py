"""The replay report: one dict (report.json), a Markdown page (report.md) and a plain-text table for the terminal.

Sections: what was replayed (bag, model, settings and what replay adapted), counts (control steps, chunks, output
messages per topic), speed (steps per second, real-time factor, where the wall time went, the share outside the
model), model latency per stage, STAR layer usage, prediction errors against the recorded motion, and the
runtime's final diagnostics (rejections, drops, holds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mole_vla_ros.replay.engine import ReplayResult
from mole_vla_ros.replay.metrics import latency_stats, layer_usage, score_chunks, summarize_errors


def build_report(result: ReplayResult, model_label: str = "") -> dict[str, Any]:
    """Everything worth keeping from a replay, JSON-serialisable."""
    wall = result.wall_s
    loop = wall.get("loop", 0.0)
    model = wall.get("model", 0.0)
    steps = result.control_steps
    scores = score_chunks(result.chunks, result.motion)
    speed = {
        "control_steps": steps,
        "loop_wall_s": loop,
        "steps_per_s": steps / loop if loop > 0 else None,
        "realtime_factor": result.bag_info["replayed_s"] / loop if loop > 0 else None,
        "inferences": len(result.model_calls_s),
        "model_wall_s": model,
        "outside_model_share": (loop - model) / loop if loop > 0 else None,
        "wall_s_by_phase": {k: round(v, 6) for k, v in sorted(wall.items())},
        "warmup_s": result.warmup_s,
    }
    latency = latency_stats(
        {
            "model_call_ms": [s * 1e3 for s in result.model_calls_s],
            **{k.split("/", 1)[1]: v for k, v in result.stage_ms.items() if k.startswith("model/")},
            "runtime_step_ms (excl. model)": result.stage_ms.get("step", []),
        }
    )
    sched = result.settings.runtime.scheduling
    report = {
        "model": {**result.policy_info, "label": model_label},
        "bag": result.bag_info,
        "replay": {
            "instruction": result.instruction,
            "instruction_source": result.instruction_source,
            "seed": result.settings.node.policy.seed,
            "scheduling_seed": sched.seed,
            "latency_mode": sched.latency_mode,
            "simulated_latency_s": sched.simulated_latency_s if sched.latency_mode == "simulated" else None,
            "dry_run": result.settings.runtime.safety.dry_run,
            "output_mode": result.settings.runtime.output_mode,
            "enabled_at_s": (result.enabled_at - result.start_s) if result.enabled_at is not None else None,
            "adaptations": result.adaptations,
            "inputs": {
                "cameras": result.plan.cameras,
                "joint_states": result.plan.joint_states,
                "ee_pose": result.plan.ee_pose or result.plan.tf,
                "gripper_state": result.plan.gripper_state,
                "robot_state": result.plan.robot_state,
                "instruction": result.plan.instruction,
            },
            "input_errors": result.input_errors,
        },
        "counts": {
            "chunks": len(result.chunks),
            "gripper_commands": [
                {"t": round(c.stamp - result.start_s, 3), "action": c.action, "width": c.width}
                for c in result.gripper_commands
            ],
            "output_messages": dict(sorted(result.output_counts.items())),
        },
        "speed": speed,
        "latency_ms": latency,
        "layers": layer_usage(result.chunks),
        "errors": {
            "reference": {
                "ee_pose": "recorded EE pose topic" if result.motion.has_motion else "none in the bag",
                "gripper": result.motion.gripper_source,
            },
            **summarize_errors(scores),
        },
        "per_chunk": [
            {
                "t": round(s.obs_stamp - result.start_s, 4),
                "layers": list(c.layer_indices),
                "translation_m_executed": _nanmean(s.translation_m[s.executed]),
                "rotation_rad_executed": _nanmean(s.rotation_rad[s.executed]),
                "gripper_accuracy_executed": _nanmean(s.gripper_correct[s.executed]),
            }
            for s, c in zip(scores, result.chunks)
        ],
        "diagnostics": _diagnostics(result),
        "outputs": {"bag": str(result.bag_path) if result.bag_path else None},
    }
    return report


def _nanmean(v: np.ndarray) -> float | None:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _diagnostics(result: ReplayResult) -> dict[str, Any]:
    d = result.diagnostics
    if d is None:
        return {}
    return {
        "final_state": d.state,
        "hold_reason": d.hold_reason,
        "disable_reason": d.disable_reason,
        "rejections": d.rejections(),
        "counters": dict(sorted(d.counters.items())),
    }


# ----------------------------------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------------------------------


def _f(value: Any, fmt: str = ".3f", none: str = "-") -> str:
    if value is None:
        return none
    return format(value, fmt)


def _err_rows(report: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    errors = report["errors"]
    for key, label, scale, unit in (
        ("translation_m", "translation", 1000.0, "mm"),
        ("rotation_rad", "rotation", 180.0 / np.pi, "deg"),
        ("gripper_accuracy", "gripper agreement", 100.0, "%"),
    ):
        e = errors.get(key)
        if not e:
            continue
        cells = []
        for part in ("first", "executed", "chunk"):
            s = e[part]
            cells.append(f"{s['mean'] * scale:.1f} {unit} (n={s['n']})" if s.get("n") else "-")
        rows.append((label, *cells))
    return rows


def format_text(report: dict) -> str:
    """The terminal summary (also the top of report.md)."""
    m, r, sp, lay = report["model"], report["replay"], report["speed"], report["layers"]
    lines = []
    if m.get("label"):
        lines += [f"!!! {m['label']}", ""]
    lines.append(
        f"bag      {report['bag']['path']}  ({report['bag']['storage']}, {report['bag']['duration_s']:.2f} s, "
        f"{report['bag']['messages']} msgs, metadata v{report['bag']['metadata_version']})"
    )
    b = report["bag"]
    if b.get("start_offset_s") or b.get("replayed_s", b["duration_s"]) < b["duration_s"] - 1e-6:
        lines.append(
            f"slice    {b['start_offset_s']:.2f} s to {b['start_offset_s'] + b['replayed_s']:.2f} s of the bag"
        )
    lines.append(
        f"model    {m.get('checkpoint')}  preset={m.get('preset', '?')} layers k={m.get('active_layers', '?')}"
        f"/{m.get('num_layers', '?')} skip={m.get('skip_mode', '?')} cameras={m['camera_names']}"
    )
    lines.append(
        f"task     {r['instruction']!r} (from {r['instruction_source']})  seed={r['seed']}  "
        f"dry_run={r['dry_run']}  latency={r['latency_mode']}"
    )
    for a in r["adaptations"]:
        lines.append(f"note     {a}")
    lines.append("")
    lines.append(f"{'control steps':<26}{sp['control_steps']}")
    lines.append(f"{'chunks predicted':<26}{report['counts']['chunks']}")
    lines.append(f"{'gripper commands':<26}{len(report['counts']['gripper_commands'])}")
    lines.append(
        f"{'steps per second':<26}{_f(sp['steps_per_s'], '.1f')}  (real-time x{_f(sp['realtime_factor'], '.2f')})"
    )
    share = sp["outside_model_share"]
    lines.append(
        f"{'time outside the model':<26}{_f(None if share is None else share * 100, '.1f')} % of the replay loop"
    )
    lines.append("")
    lat = report["latency_ms"]
    if lat:
        lines.append(f"{'latency [ms]':<30}{'median':>10}{'p95':>10}{'n':>6}")
        for stage, s in lat.items():
            if s.get("n"):
                lines.append(f"{stage:<30}{s['median']:>10.2f}{s['p95']:>10.2f}{s['n']:>6}")
        lines.append("")
    rows = _err_rows(report)
    if rows:
        ref = report["errors"]["reference"]
        lines.append(f"prediction error vs recorded motion (pose: {ref['ee_pose']}; gripper: {ref['gripper']})")
        lines.append(f"{'':<20}{'first action':>20}{'executed':>20}{'whole chunk':>20}")
        for row in rows:
            lines.append(f"{row[0]:<20}{row[1]:>20}{row[2]:>20}{row[3]:>20}")
        lines.append("")
    elif not report["counts"]["chunks"]:
        state = report["diagnostics"].get("final_state", "?")
        lines.append(f"prediction error: not scored (no chunk was predicted; the runtime ended in state {state})")
    else:
        lines.append("prediction error: not scored (the bag holds no EE pose to compare with)")
        lines.append("")
    if lay:
        lines.append(
            f"STAR layer usage over {report['counts']['chunks']} chunks (k per step: {lay['layers_per_step']}, "
            f"{lay['distinct_choices']} distinct choices)"
        )
        top = max(lay["histogram"]) or 1
        probs = lay.get("mean_router_prob") or []
        for i, n in enumerate(lay["histogram"]):
            p = f"   mean router p {probs[i]:.3f}" if i < len(probs) else ""
            lines.append(f"  layer {i:>2} {'#' * round(20 * n / top):<20} {n:>4}{p}")
        lines.append("")
    diag = report["diagnostics"]
    if diag:
        rej = diag["rejections"]
        lines.append(f"runtime   final state {diag['final_state']}; rejections: {rej or 'none'}")
    if r["input_errors"]:
        lines.append(f"inputs    rejected: {r['input_errors']}")
    out = report["outputs"]
    if out.get("bag"):
        lines.append(f"output    {out['bag']}  ({sum(report['counts']['output_messages'].values())} messages)")
    for path in out.get("plots", {}).values():
        lines.append(f"plot      {path}")
    for name in ("json", "markdown"):
        if out.get(name):
            lines.append(f"report    {out[name]}")
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    lines = ["# MoLe-VLA offline replay report", ""]
    if report["model"].get("label"):
        lines += [f"> **{report['model']['label']}**", ""]
    lines += ["```", format_text(report), "```", ""]
    lines += ["## Output topics", "", "| topic | messages |", "|---|---|"]
    for topic, n in report["counts"]["output_messages"].items():
        lines.append(f"| `{topic}` | {n} |")
    lines.append("")
    plots = report["outputs"].get("plots", {})
    if plots:
        lines += ["## Plots", ""]
        for name, path in plots.items():
            lines.append(
                f"![{name}]({Path(path).name if Path(path).parent.name != 'plots' else 'plots/' + Path(path).name})"
            )
        lines.append("")
    lines += ["## Wall time by phase (s)", "", "| phase | seconds |", "|---|---|"]
    for phase, s in report["speed"]["wall_s_by_phase"].items():
        lines.append(f"| {phase} | {s:.4f} |")
    lines.append("")
    return "\n".join(lines)


def write_report(report: dict, out_dir: str | Path) -> dict[str, str]:
    """Write report.json and report.md into `out_dir`; returns their paths (also stored in report["outputs"])."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(out / "report.json"), "markdown": str(out / "report.md")}
    report["outputs"].update(paths)
    Path(paths["json"]).write_text(json.dumps(report, indent=2, default=_json_default) + "\n", encoding="utf-8")
    Path(paths["markdown"]).write_text(format_markdown(report), encoding="utf-8")
    return paths


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
