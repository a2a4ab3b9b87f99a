"""Run sglang's Engine from the pin and from the patched tree side by side.

Each side is a worker process (worker.py) with its own tree on PYTHONPATH;
both engines stay resident on the GPU, so the harness interleaves their
requests: the same prompts, the same adapters, the same engine options.
"""

import hashlib
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Listener
from pathlib import Path

HERE = Path(__file__).resolve().parent
SITE = HERE / "site"  # sitecustomize: adapters load from disk under dummy weights


@dataclass(frozen=True)
class Mode:
    graphs: bool  # CUDA graphs for decode (sglang's default) or eager
    virtual_experts: bool  # --lora-use-virtual-experts

    @property
    def name(self):
        return ("graphs" if self.graphs else "eager") + (
            "+ve" if self.virtual_experts else ""
        )

    @classmethod
    def parse(cls, text):
        base, _, extra = text.partition("+")
        if base not in ("graphs", "eager") or extra not in ("", "ve"):
            raise ValueError(
                f"mode '{text}': expected graphs, eager, graphs+ve or eager+ve"
            )
        return cls(graphs=base == "graphs", virtual_experts=extra == "ve")


def engine_args(
    model_dir, adapters, mode, lora_backend, max_bs, max_total_tokens, mem_fraction
):
    """The Engine options both sides get; docs/e2e.md says why each is chosen."""
    return dict(
        model_path=str(model_dir),
        load_format="dummy",  # Qwen3-30B-A3B's shapes without its 61 GB of weights
        skip_tokenizer_init=True,  # token ids in and out; no tokenizer files needed
        attention_backend="triton",  # no flashinfer JIT build
        sampling_backend="pytorch",  # no flashinfer sampling kernels
        grammar_backend="none",  # no xgrammar
        enable_lora=True,
        lora_paths=[f"{name}={path}" for name, path in adapters.items()],
        max_loras_per_batch=len(adapters)
        + 1,  # every adapter and "no adapter" in one batch
        lora_backend=lora_backend,
        lora_use_virtual_experts=mode.virtual_experts,
        disable_cuda_graph=not mode.graphs,
        cuda_graph_max_bs=max_bs,
        max_running_requests=max_bs,
        max_total_tokens=max_total_tokens,  # a small KV cache, so both engines fit at once
        mem_fraction_static=mem_fraction,
        context_length=1024,
        disable_radix_cache=True,  # repeated prompts are prefilled every time
        sleep_on_idle=True,  # the idle side does not spin while the other one runs
        random_seed=0,
        log_level="info",
    )


class EngineSide:
    """A worker process serving one tree's Engine; calls are blocking RPCs."""

    def __init__(self, label, tree, log_path, extra_path=()):
        self.label, self.tree, self.log_path = label, Path(tree), Path(log_path)
        python_dir = self.tree / "python"
        assert (
            python_dir / "sglang" / "__init__.py"
        ).is_file(), f"{label}: {python_dir} is not an sglang tree (run 'make apply')"
        self._dir = tempfile.mkdtemp(prefix=f"e2e-{label}-")
        authkey = secrets.token_hex(16)
        address = os.path.join(self._dir, "socket")
        listener = Listener(address, family="AF_UNIX", authkey=authkey.encode())
        env = dict(os.environ)
        path = [str(python_dir), str(SITE), *map(str, extra_path)]
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env.update(
            PYTHONPATH=os.pathsep.join(path), E2E_AUTHKEY=authkey, PYTHONUNBUFFERED="1"
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "worker.py"), "--address", address],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        accepted = []
        thread = threading.Thread(
            target=lambda: accepted.append(listener.accept()), daemon=True
        )
        thread.start()
        thread.join(120)
        listener.close()
        if not accepted:
            self.proc.kill()
            raise RuntimeError(f"{label}: worker did not connect; see {self.log_path}")
        self.conn = accepted[0]
        self._pending = None

    def send(self, op, **kwargs):
        assert self._pending is None, f"{self.label}: a call is already pending"
        self.conn.send((op, kwargs))
        self._pending = op

    def wait(self, timeout=900):
        op, self._pending = self._pending, None
        deadline = time.monotonic() + timeout
        while not self.conn.poll(1.0):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label}: worker exited ({self.proc.returncode}) during "
                    f"'{op}'; last log lines:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: '{op}' took over {timeout} s")
        try:
            status, result = self.conn.recv()
        except EOFError:
            raise RuntimeError(
                f"{self.label}: worker closed the connection during '{op}'; "
                f"last log lines:\n{self.log_tail()}"
            ) from None
        if status != "ok":
            raise RuntimeError(f"{self.label}: '{op}' failed:\n{result}")
        return result

    def call(self, op, **kwargs):
        self.send(op, **kwargs)
        return self.wait()

    def log_tail(self, lines=40):
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def close(self):
        try:
            if self.proc.poll() is None and self._pending is None:
                self.call("shutdown")
        except (RuntimeError, OSError, EOFError):
            pass  # the worker is gone already; its log says why
        finally:
            self.conn.close()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self._log.close()


def start_sides(trees, args_by_side, log_dir, tag, sequential=False):
    """Start every side's engine, at once or (sequential) one after the other.

    Sequential suits the first start on a fresh machine, where both engines
    would JIT-build the same kernels into the same caches at the same time.
    """
    sides = {}
    try:
        for label, tree in trees.items():
            sides[label] = EngineSide(label, tree, Path(log_dir) / f"{tag}-{label}.log")
        info = {}
        for label, side in sides.items():
            side.send("start", **args_by_side[label])
            if sequential:
                info[label] = side.wait()
        info.update(
            {label: side.wait() for label, side in sides.items() if label not in info}
        )
    except BaseException:
        for side in sides.values():
            side._pending = None
            side.close()
        raise
    return sides, info


def prompts(count, length, seed, vocab=151936):
    rng = random.Random(seed)
    return [
        [rng.randrange(1000, vocab - 1000) for _ in range(length)] for _ in range(count)
    ]


def mixed_batch(adapter_names, prompt_len, seed):
    """Every adapter and no adapter in one batch: (prompt j, adapter j), (prompt j, none)."""
    ps = prompts(len(adapter_names), prompt_len, seed)
    input_ids, lora = [], []
    for p, name in zip(ps, adapter_names):
        input_ids += [p, p]
        lora += [name, None]
    return input_ids, lora


TIE_FACTOR = 4


def check_outputs(sides, adapter_names, prompt_len, new_tokens, seed, logprob_atol):
    """Adapters change the pin's tokens; pin and ours agree token for token,
    or differ first at a near tie (see below), with logprobs within logprob_atol.

    Also serves every request of the batch alone, on each side: greedy tokens
    that change with the neighbours (report["batch_dependent"]) point at work
    of one request reaching another. Returns a report; report["failures"]
    lists what failed (empty: passed).
    """
    input_ids, lora = mixed_batch(adapter_names, prompt_len, seed)
    out, batch_dependent = {}, {}
    for label, side in sides.items():
        out[label] = side.call(
            "generate",
            input_ids=input_ids,
            lora_path=lora,
            max_new_tokens=new_tokens,
            return_logprob=True,
        )["outputs"]
        batch_dependent[label] = [
            i
            for i, (ids, name) in enumerate(zip(input_ids, lora))
            if side.call(
                "generate", input_ids=[ids], lora_path=[name], max_new_tokens=new_tokens
            )["outputs"][0]["output_ids"]
            != out[label][i]["output_ids"]
        ]
    failures = []
    pin = out["pin"]
    adapters_matter = {}
    for j, name in enumerate(adapter_names):
        with_adapter, without = pin[2 * j]["output_ids"], pin[2 * j + 1]["output_ids"]
        differ = [k for k, (a, b) in enumerate(zip(with_adapter, without)) if a != b]
        adapters_matter[name] = differ[0] if differ else None
        if not differ:
            failures.append(
                f"adapter {name} does not change the pin's tokens "
                f"(raise --adapter-std)"
            )
    # Logprobs are compared up to the first differing token: after it the
    # contexts differ. A differing token is a near tie when ours picked one of
    # the pin's top tokens there, within TIE_FACTOR times the largest logprob
    # difference where the tokens agree of the pin's best: rounding order, not
    # a wrong adapter, which moves logprobs by far more. Looked up by id: at an
    # exact tie the top-k order need not be the sampler's choice.
    compared = []
    for a, b in zip(pin, out["ours"]):
        pairs = list(zip(a["output_ids"], b["output_ids"]))
        first = next((k for k, (x, y) in enumerate(pairs) if x != y), None)
        upto = len(pairs) if first is None else first
        diffs = [abs(x - y) for x, y in zip(a["logprobs"][:upto], b["logprobs"][:upto])]
        compared.append((a, b, first, max(diffs, default=0.0)))
    max_logprob_diff = max(diff for *_, diff in compared)
    requests = []
    for i, (a, b, first, diff) in enumerate(compared):
        entry = {
            "lora": lora[i],
            "identical": first is None,
            "max_logprob_diff": diff,
            "pin": a["output_ids"],
            "ours": b["output_ids"],
        }
        requests.append(entry)
        if diff > logprob_atol:
            failures.append(
                f"request {i} (adapter {lora[i]}): logprobs differ by {diff:.3g} "
                f"> {logprob_atol}"
            )
        if first is None:
            continue
        top = dict(a["top"][first])
        gap = max(top.values()) - top.get(b["output_ids"][first], float("-inf"))
        entry.update(first_diff=first, pin_top=a["top"][first], pin_gap=gap)
        entry["near_tie"] = gap <= TIE_FACTOR * max_logprob_diff
        if not entry["near_tie"]:
            failures.append(
                f"request {i} (adapter {lora[i]}): tokens differ from position "
                f"{first} (ours' token is {gap:.3g} below the pin's best there; "
                f"pin's top {a['top'][first]}): "
                f"pin {a['output_ids']} vs ours {b['output_ids']}"
            )
    return {
        "batch": len(input_ids),
        "new_tokens": new_tokens,
        "adapters_matter_first_diff": adapters_matter,
        "requests": requests,
        "max_logprob_diff": max_logprob_diff,
        "batch_dependent": batch_dependent,
        "failures": failures,
    }


def workload_lora(workload, bs, adapter_names):
    if workload == "none":
        return [None] * bs
    if workload == "mixed":
        return [adapter_names[i % len(adapter_names)] for i in range(bs)]
    assert (
        workload in adapter_names
    ), f"workload '{workload}': not 'none', 'mixed' or an adapter"
    return [workload] * bs


def digest(outputs):
    return hashlib.sha256(
        repr([o["output_ids"] for o in outputs]).encode()
    ).hexdigest()[:16]


def measure(
    sides,
    adapter_names,
    batch_sizes,
    workloads,
    repeats,
    decode_steps,
    prompt_len,
    seed,
):
    """Decode step time: t(prefill + decode_steps) - t(prefill only), per side.

    Rounds interleave the sides (their order alternates per round) and each
    (batch, workload) pair runs on every side before the next one starts.
    """
    labels = list(sides)
    cases = [(bs, w) for bs in batch_sizes for w in workloads]
    samples = {(label, bs, w): [] for label in labels for bs, w in cases}
    mismatches = []
    for round_ in range(repeats + 1):  # round 0 warms up and is not recorded
        order = labels if round_ % 2 else labels[::-1]
        for bs, w in cases:
            input_ids = prompts(bs, prompt_len, seed + bs)
            lora = workload_lora(w, bs, adapter_names)
            tokens = {}
            for label in order:
                side = sides[label]
                t1 = side.call(
                    "generate", input_ids=input_ids, lora_path=lora, max_new_tokens=1
                )
                tn = side.call(
                    "generate",
                    input_ids=input_ids,
                    lora_path=lora,
                    max_new_tokens=decode_steps + 1,
                )
                tokens[label] = digest(tn["outputs"])
                if round_:
                    samples[(label, bs, w)].append(
                        (tn["seconds"] - t1["seconds"]) / decode_steps
                    )
            if len(set(tokens.values())) != 1:
                mismatches.append({"bs": bs, "workload": w, "round": round_, **tokens})
    rows = []
    for bs, w in cases:
        row = {"bs": bs, "workload": w}
        for label in labels:
            steps = samples[(label, bs, w)]
            med = statistics.median(steps)
            row[label] = {
                "step_ms": med * 1e3,
                "min_ms": min(steps) * 1e3,
                "max_ms": max(steps) * 1e3,
                "tok_s": bs / med,
                "samples_ms": [s * 1e3 for s in steps],
            }
        rows.append(row)
    return rows, mismatches
