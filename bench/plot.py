"""Plots of the benchmark results against decode batch size, pre vs ours (log y):
bench_moe_lora_info.py's per-batch metadata cost (host and GPU time) and
bench_moe_layer.py's time per MoE layer (eager and CUDA graph).

Usage: python bench/plot.py build/bench/moe_lora_info.json|moe_layer.json [out.png]
"""

import json
import sys
from pathlib import Path

try:
    import matplotlib
except ImportError as error:
    raise SystemExit(
        "error: the plots need matplotlib (pip install matplotlib), "
        "or run the benchmark with --no-plot"
    ) from error

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def _format_axis(ax, batch_sizes, title: str, xlabel: bool):
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes, [str(bs) for bs in batch_sizes])
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    if xlabel:
        ax.set_xlabel("decode batch size (requests)")


def _save(fig, payload: dict, title: str, path: Path):
    record = payload["record"]
    fig.suptitle(
        f"{title}\n{record['device']}, {record['date_utc']}, "
        f"torch {record['torch']}, triton {record['triton']}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def plot_lora_info(payload: dict, path: Path):
    rows = [r for r in payload["rows"] if r["decode_bs"] is not None]
    panels = [
        ("host: eager wall µs per batch", lambda r, v: r["host"][v]["wall_us"]),
        (
            "GPU: CUDA-graph replay µs per batch",
            lambda r, v: r["gpu"][v]["median_us"] if r["gpu"] else None,
        ),
    ]
    layer_counts = sorted({r["layers"] for r in rows})
    batch_sizes = sorted({r["decode_bs"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True, squeeze=False)
    for row_index, virtual_experts in enumerate((False, True)):
        for col_index, (title, value_of) in enumerate(panels):
            ax = axes[row_index][col_index]
            for version, color in (("pre", "tab:red"), ("ours", "tab:blue")):
                for num_layers, style in zip(layer_counts, ("-", "--", ":")):
                    points = sorted(
                        (r["decode_bs"], value_of(r, version))
                        for r in rows
                        if r["virtual_experts"] == virtual_experts
                        and r["layers"] == num_layers
                        and value_of(r, version) is not None
                    )
                    if points:
                        xs, ys = zip(*points)
                        ax.plot(
                            xs,
                            ys,
                            style,
                            color=color,
                            marker="o",
                            label=f"{version} L={num_layers}",
                        )
            _format_axis(
                ax,
                batch_sizes,
                f"{title}, virtual experts {'on' if virtual_experts else 'off'}",
                xlabel=row_index == 1,
            )
    _save(
        fig,
        payload,
        "MoE LoRA per-batch metadata, pre (sglang 0.5.12) vs ours",
        path,
    )


def plot_layer(payload: dict, path: Path):
    results = payload["results"]
    fig, axes = plt.subplots(
        len(results), 2, figsize=(12, 4 * len(results)), squeeze=False
    )
    for row_index, result in enumerate(results):
        # The L-layer stack: the time per layer of a decode step.
        rows = [r for r in result["rows"] if r["layers"] > 1]
        batch_sizes = sorted({r["bs"] for r in rows})
        for col_index, mode in enumerate(("eager", "graph")):
            ax = axes[row_index][col_index]
            for version, color in (("pre", "tab:red"), ("ours", "tab:blue")):
                for virtual_experts, style in ((False, "-"), (True, "--")):
                    points = sorted(
                        (r["bs"], r[f"{version}_us"] / r["layers"])
                        for r in rows
                        if r["mode"] == mode and r["virtual_experts"] == virtual_experts
                    )
                    if points:
                        xs, ys = zip(*points)
                        ax.plot(
                            xs,
                            ys,
                            style,
                            color=color,
                            marker="o",
                            label=f"{version} VE={'on' if virtual_experts else 'off'}",
                        )
            shape = result["shape"]
            _format_axis(
                ax,
                batch_sizes,
                f"{shape['name']} ({result['num_experts']} experts), L={shape['layers']}, "
                f"{mode}: µs per layer",
                xlabel=row_index == len(results) - 1,
            )
    _save(fig, payload, "MoE LoRA layer forward, pre (sglang 0.5.12) vs ours", path)


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    source = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) == 3 else source.with_suffix(".png")
    payload = json.loads(source.read_text())
    (plot_layer if "results" in payload else plot_lora_info)(payload, target)


if __name__ == "__main__":
    main()
