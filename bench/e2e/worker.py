"""One side of the engine benchmark: sglang's offline Engine from one tree.

Started by bench/e2e/harness.py with that tree's python/ on PYTHONPATH; it
serves the harness's requests over a multiprocessing connection, so that the
pin's engine and the patched tree's engine run side by side and the harness
interleaves them. Run only through the harness.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import time
import traceback
from multiprocessing.connection import Client

TOP_LOGPROBS = 5


def count_kernels(trace_path):
    """GPU kernels (count and µs by name) and host launch calls in a
    torch.profiler chrome trace."""
    opener = gzip.open if trace_path.endswith(".gz") else open
    with opener(trace_path, "rt") as f:
        events = json.load(f)["traceEvents"]
    kernels = collections.Counter()
    kernel_us = collections.Counter()
    launches = collections.Counter()
    for event in events:
        if event.get("ph") != "X":
            continue
        cat, name = event.get("cat", ""), event.get("name", "")
        if cat == "kernel":
            kernels[name] += 1
            kernel_us[name] += event.get("dur", 0)
        elif cat in ("cuda_runtime", "cuda_driver") and "Launch" in name:
            launches[name] += 1
    return kernels, kernel_us, launches


class Side:
    def __init__(self, engine_args):
        import sglang

        self.engine = sglang.Engine(**engine_args)
        self.version = sglang.__version__
        self.path = os.path.dirname(sglang.__file__)

    def generate(self, input_ids, lora_path, max_new_tokens, return_logprob=False):
        sampling = {
            "temperature": 0.0,
            "max_new_tokens": max_new_tokens,
            "ignore_eos": True,
        }
        start = time.perf_counter()
        outputs = self.engine.generate(
            input_ids=input_ids,
            sampling_params=sampling,
            lora_path=lora_path,
            return_logprob=return_logprob,
            # The best tokens of each greedy step: how near a tie it was.
            top_logprobs_num=TOP_LOGPROBS if return_logprob else None,
        )
        seconds = time.perf_counter() - start
        results = []
        for out in outputs:
            item = {"output_ids": list(out["output_ids"])}
            if return_logprob:
                meta = out["meta_info"]
                item["logprobs"] = [lp for lp, _, _ in meta["output_token_logprobs"]]
                item["top"] = [
                    [[tok, lp] for lp, tok, _ in top]
                    for top in meta["output_top_logprobs"]
                ]
            results.append(item)
        return {"seconds": seconds, "outputs": results}

    def profile(self, input_ids, lora_path, short, long, directory):
        """Kernels per decode step: the difference of two traces, long - short tokens."""
        counts = {}
        for tokens in (short, long):
            out_dir = os.path.join(directory, f"tokens{tokens}")
            os.makedirs(out_dir, exist_ok=True)
            self.engine.start_profile(
                output_dir=out_dir,
                activities=["CPU", "GPU"],
                with_stack=False,
                record_shapes=False,
            )
            self.generate(input_ids, lora_path, tokens)
            self.engine.stop_profile()
            traces = sorted(glob.glob(os.path.join(out_dir, "*.trace.json*")))
            assert traces, f"the profiler wrote no trace under {out_dir}"
            counts[tokens] = count_kernels(traces[-1])
        steps = long - short
        (k_short, us_short, l_short), (k_long, us_long, l_long) = (
            counts[short],
            counts[long],
        )
        per_name = {
            name: (k_long[name] - k_short[name]) / steps
            for name in set(k_long) | set(k_short)
            if k_long[name] != k_short[name]
        }
        return {
            "kernels_per_step": (sum(k_long.values()) - sum(k_short.values())) / steps,
            "launch_calls_per_step": {
                name: (l_long[name] - l_short[name]) / steps
                for name in set(l_long) | set(l_short)
            },
            "kernels_by_name": dict(sorted(per_name.items(), key=lambda kv: -kv[1])),
            "kernel_us_per_step": (sum(us_long.values()) - sum(us_short.values()))
            / steps,
            "kernel_us_by_name": {
                name: round((us_long[name] - us_short[name]) / steps, 2)
                for name in per_name
            },
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    args = parser.parse_args()
    conn = Client(args.address, authkey=os.environb[b"E2E_AUTHKEY"])
    side = None
    while True:
        try:
            op, kwargs = conn.recv()
        except EOFError:  # the harness went away
            return
        try:
            if op == "start":
                side = Side(kwargs)
                result = {"version": side.version, "path": side.path}
            elif op == "shutdown":
                if side is not None:
                    side.engine.shutdown()
                conn.send(("ok", None))
                return
            else:
                result = getattr(side, op)(**kwargs)
            conn.send(("ok", result))
        except Exception:  # reported to the harness, which names the side
            conn.send(("error", traceback.format_exc()))


if __name__ == "__main__":
    main()
