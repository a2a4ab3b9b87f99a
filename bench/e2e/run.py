#!/usr/bin/env python3
"""sglang's engine, pin vs patched tree, side by side: outputs, decode speed, kernels.

    bench/e2e/run.py --pin-tree build/sglang-pin --ours-tree build/sglang

Writes a Qwen3-30B-A3B config (dummy weights) and synthetic PEFT adapters,
starts both engines per mode, checks that the adapters change the pin's tokens
and that both trees give the same tokens, then times decode steps with the
sides interleaved and counts kernels per decode step with torch.profiler.
Prints markdown tables and writes results.json. docs/e2e.md has the results.
"""

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import model  # noqa: E402


def csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--pin-tree", default="build/sglang-pin", help="the pristine sglang tree"
    )
    p.add_argument(
        "--ours-tree", default="build/sglang", help="the patched sglang tree"
    )
    p.add_argument(
        "--work-dir", default="build/e2e", help="model config, adapters, logs"
    )
    p.add_argument(
        "--out", default=None, help="results folder (default WORK_DIR/results)"
    )
    p.add_argument(
        "--layers", type=int, default=24, help="decoder layers (Qwen3-30B-A3B: 48)"
    )
    p.add_argument("--experts", type=int, default=None, help="experts (default 128)")
    p.add_argument(
        "--topk", type=int, default=None, help="experts per token (default 8)"
    )
    p.add_argument(
        "--ranks", type=csv(int), default=[4, 8, 16, 32], help="one adapter per rank"
    )
    p.add_argument(
        "--adapter-std",
        type=float,
        default=0.2,
        help="std of the attention A and B weights",
    )
    p.add_argument(
        "--adapter-expert-std",
        type=float,
        default=0.6,
        help="std of the experts' A and B weights",
    )
    p.add_argument("--adapter-seed", type=int, default=0)
    p.add_argument(
        "--adapter-device", default="cuda", help="where the random weights are drawn"
    )
    p.add_argument(
        "--modes",
        type=csv(harness.Mode.parse),
        default="graphs,eager,graphs+ve",
        help="graphs, eager, graphs+ve, eager+ve",
    )
    p.add_argument(
        "--measure-modes",
        type=csv(harness.Mode.parse),
        default=None,
        help="modes to time (default: all of --modes)",
    )
    p.add_argument("--lora-backend", default="triton")
    p.add_argument("--batch-sizes", type=csv(int), default=[1, 8, 32, 64])
    p.add_argument(
        "--workloads",
        type=csv(str),
        default=None,
        help="rN (all on the rank-N adapter), mixed, none (default: largest rank, mixed, none)",
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds after a warm-up"
    )
    p.add_argument("--decode-steps", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument(
        "--check-tokens",
        type=int,
        default=16,
        help="greedy tokens of the outputs check",
    )
    p.add_argument("--logprob-atol", type=float, default=0.02)
    p.add_argument(
        "--profile-modes",
        type=csv(harness.Mode.parse),
        default="graphs,eager",
        help="modes to count kernels per decode step in",
    )
    p.add_argument(
        "--profile-batch-sizes",
        type=csv(int),
        default=[1],
        help="batch sizes of the profiled decode steps",
    )
    p.add_argument(
        "--check-only", action="store_true", help="outputs check only, no timing"
    )
    p.add_argument("--max-total-tokens", type=int, default=16384)
    p.add_argument("--mem-fraction", type=float, default=0.88)
    args = p.parse_args(argv)
    if isinstance(args.modes, str):
        args.modes = csv(harness.Mode.parse)(args.modes)
    if isinstance(args.profile_modes, str):
        args.profile_modes = csv(harness.Mode.parse)(args.profile_modes)
    if args.measure_modes is None:
        args.measure_modes = args.modes
    if args.workloads is None:
        args.workloads = [f"r{max(args.ranks)}", "mixed", "none"]
    if len(set(args.ranks)) != len(args.ranks):
        p.error(f"--ranks {args.ranks}: one adapter per rank, so ranks must differ")
    args.out = Path(args.out or Path(args.work_dir) / "results")
    return args


def card():
    try:
        line = (
            subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,memory.total,driver_version",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[0]
        )
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown (nvidia-smi failed)"
    return line


def prepare(args):
    """The model directory and the adapters; kept when written with the same settings."""
    work = Path(args.work_dir)
    config = model.model_config(args.layers, args.experts, args.topk)
    wanted = {
        "config": config,
        "ranks": args.ranks,
        "std": args.adapter_std,
        "expert_std": args.adapter_expert_std,
        "device": args.adapter_device,
        "seed": args.adapter_seed,
    }
    stamp = work / "inputs.json"
    model_dir = work / "model"
    adapters = {f"r{rank}": work / "adapters" / f"r{rank}" for rank in args.ranks}
    if not (stamp.is_file() and json.loads(stamp.read_text()) == wanted):
        stamp.unlink(missing_ok=True)
        model.write_model(model_dir, config)
        for i, (name, path) in enumerate(adapters.items()):
            rank = args.ranks[i]
            print(
                f"==> writing adapter {name} ({model.adapter_bytes(config, rank) / 1e9:.2f} GB)",
                flush=True,
            )
            model.write_adapter(
                path,
                config,
                rank,
                seed=args.adapter_seed + i,
                std=args.adapter_std,
                expert_std=args.adapter_expert_std,
                device=args.adapter_device,
            )
        stamp.write_text(json.dumps(wanted, indent=2) + "\n")
    return config, model_dir, adapters


def fmt_row(bs, w, r, base):
    pin, ours = r["pin"], r["ours"]
    change = ours["tok_s"] / pin["tok_s"] - 1
    cells = [
        str(bs),
        w,
        f"{pin['step_ms']:.2f} ({pin['min_ms']:.2f}-{pin['max_ms']:.2f})",
        f"{ours['step_ms']:.2f} ({ours['min_ms']:.2f}-{ours['max_ms']:.2f})",
        f"{pin['tok_s']:.0f}",
        f"{ours['tok_s']:.0f}",
        f"{change:+.1%}",
    ]
    if base is not None:
        cells += [
            f"{base['pin']['tok_s']:.0f}",
            f"{base['ours']['tok_s']:.0f}",
            f"{ours['tok_s'] / base['ours']['tok_s']:.2f}x",
        ]
    else:
        cells += ["-", "-", "-"]
    return "| " + " | ".join(cells) + " |"


def speed_table(rows):
    none = {r["bs"]: r for r in rows if r["workload"] == "none"}
    lines = [
        "| bs | adapters | pin step ms (min-max) | ours step ms (min-max) | pin tok/s | ours tok/s "
        "| ours vs pin | no adapter: pin tok/s | no adapter: ours tok/s | ours with / without |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["workload"] != "none":
            lines.append(fmt_row(r["bs"], r["workload"], r, none.get(r["bs"])))
    if not any(r["workload"] != "none" for r in rows):
        lines += [fmt_row(r["bs"], r["workload"], r, None) for r in rows]
    return "\n".join(lines)


def eager_of(mode_name):
    return mode_name.replace("graphs", "eager")


def pin_is_reference(mode_name, names_run):
    """The pin of this mode is the outputs check's reference: every eager mode,
    and a graph mode whose eager mode does not run."""
    eager = eager_of(mode_name)
    return eager == mode_name or eager not in names_run


def graph_failures(checks):
    """Ours under a graph mode must give its tokens of the eager mode."""
    failures = []
    for g in checks:
        e = eager_of(g)
        if e == g or e not in checks:
            continue
        for i, (r, q) in enumerate(zip(checks[g]["requests"], checks[e]["requests"])):
            if r["ours"] != q["ours"]:
                failures.append(
                    f"{g}: request {i} (adapter {r['lora']}): ours gives other "
                    f"tokens than ours {e}: {r['ours']} vs {q['ours']}"
                )
    return failures


def cross_mode(checks):
    """Each side under CUDA graphs against the pin eager, request by request:
    the eager pin is the reference that no graph path touches.
    {label: [identical]}."""
    return {
        f"{side} {g} vs pin {eager_of(g)}": [
            r[side] == q["pin"]
            for r, q in zip(checks[g]["requests"], checks[eager_of(g)]["requests"])
        ]
        for g in checks
        if eager_of(g) != g and eager_of(g) in checks
        for side in ("ours", "pin")
    }


def profile_table(profiles):
    lines = [
        "| mode | adapters | side | GPU kernels per decode step | GPU kernel µs per step "
        "| host launch calls per step |",
        "|---|---|---|---|---|---|",
    ]
    for mode, by_w in profiles.items():
        for w, by_side in by_w.items():
            for label, p in by_side.items():
                calls = ", ".join(
                    f"{k} {v:g}"
                    for k, v in sorted(p["launch_calls_per_step"].items())
                    if v
                )
                lines.append(
                    f"| {mode} | {w} | {label} | {p['kernels_per_step']:g} "
                    f"| {p.get('kernel_us_per_step', 0):.1f} | {calls} |"
                )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    config, model_dir, adapters = prepare(args)
    names = list(adapters)
    trees = {"pin": args.pin_tree, "ours": args.ours_tree}
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "card": card(),
        "argv": sys.argv[1:],
        "trees": trees,
        "model": {
            k: config[k]
            for k in (
                "num_hidden_layers",
                "num_experts",
                "num_experts_per_tok",
                "hidden_size",
                "moe_intermediate_size",
            )
        },
        "adapters": dict(zip(names, args.ranks)),
        "adapter_std": args.adapter_std,
        "adapter_expert_std": args.adapter_expert_std,
        "lora_backend": args.lora_backend,
        "checks": {},
        "speed": {},
        "mismatches": {},
        "profiles": {},
        "profile_errors": [],
        "engine": {},
    }
    failures = []
    names_run = {m.name for m in args.modes}

    def save():
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    for mode in args.modes:
        print(f"==> mode {mode.name}: starting both engines", flush=True)
        eargs = harness.engine_args(
            model_dir,
            adapters,
            mode,
            args.lora_backend,
            max(args.batch_sizes + [2 * len(names)]),  # the check's batch runs as one
            args.max_total_tokens,
            args.mem_fraction,
        )
        # One port range per side: the two engines start at the same time.
        by_side = {
            label: dict(eargs, port=31000 + 1000 * i) for i, label in enumerate(trees)
        }
        sides, info = harness.start_sides(
            trees, by_side, args.out, mode.name, sequential=mode == args.modes[0]
        )
        results["engine"][mode.name] = {
            "args": {k: str(v) for k, v in eargs.items()},
            "sides": info,
        }
        try:
            check = harness.check_outputs(
                sides,
                names,
                args.prompt_len,
                args.check_tokens,
                seed=1,
                logprob_atol=args.logprob_atol,
            )
            results["checks"][mode.name] = check
            # 0.5.12's graph path hands its MoE LoRA alignment the whole graph
            # buffers (bench/e2e/graph_padding.py): where the eager pin runs
            # too, it is the reference, and ours under graphs must match ours
            # eager (after the loop).
            if pin_is_reference(mode.name, names_run):
                failures += [f"{mode.name}: {f}" for f in check["failures"]]
            print(
                f"==> {mode.name}: outputs check: {len(check['requests'])} requests, "
                f"max logprob diff {check['max_logprob_diff']:.3g}, "
                f"{'PASS' if not check['failures'] else 'FAIL'}",
                flush=True,
            )
            for f in check["failures"]:
                print(f"    {f}", flush=True)
            for label, dependent in check["batch_dependent"].items():
                print(
                    f"    {label}: requests whose tokens change when served alone: "
                    f"{dependent or 'none'}",
                    flush=True,
                )
            save()
            if args.check_only:
                continue
            if mode in args.measure_modes:
                rows, mismatches = harness.measure(
                    sides,
                    names,
                    args.batch_sizes,
                    args.workloads,
                    args.repeats,
                    args.decode_steps,
                    args.prompt_len,
                    seed=100,
                )
                results["speed"][mode.name] = rows
                results["mismatches"][mode.name] = mismatches
                failures += [
                    f"{mode.name}: measured outputs differ: {m}" for m in mismatches
                ]
                print(f"\n### {mode.name}\n\n{speed_table(rows)}\n", flush=True)
                save()
            if mode in args.profile_modes:
                prof = results["profiles"].setdefault(mode.name, {})
                profiled = [
                    (w, bs)
                    for bs in args.profile_batch_sizes
                    for w in (f"r{max(args.ranks)}", "none")
                ]
                for w, bs in profiled:
                    lora = harness.workload_lora(w, bs, names)
                    key = w if bs == 1 else f"{w} bs={bs}"
                    for label, side in sides.items():
                        trace_dir = args.out / f"trace-{mode.name}-{w}-bs{bs}-{label}"
                        try:
                            prof.setdefault(key, {})[label] = side.call(
                                "profile",
                                input_ids=harness.prompts(bs, args.prompt_len, 7),
                                lora_path=lora,
                                short=5,
                                long=21,
                                directory=str(trace_dir),
                            )
                        except RuntimeError as err:  # the timings stand without it
                            results["profile_errors"].append(
                                f"{mode.name} {w} {label}: {err}"
                            )
                            print(f"==> profile failed: {err}", flush=True)
                save()
        finally:
            for side in sides.values():
                side.close()

    print(
        f"\n# {results['card']}, {results['date']}, {config['num_hidden_layers']} layers, "
        f"{config['num_experts']} experts, top-{config['num_experts_per_tok']}, "
        f"lora backend {args.lora_backend}"
    )
    for name, rows in results["speed"].items():
        print(f"\n### {name}\n\n{speed_table(rows)}")
    if results["profiles"]:
        print(f"\n### kernels per decode step\n\n{profile_table(results['profiles'])}")
    results["cross_mode"] = cross_mode(results["checks"])
    failures += graph_failures(results["checks"])
    for label, same in results["cross_mode"].items():
        print(f"\n{label}: {sum(same)} of {len(same)} requests token-identical")
    results["failures"] = failures
    save()
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
