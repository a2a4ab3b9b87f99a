"""The engine harness's own logic (bench/e2e), without an engine or a GPU.

The sides here are scripted stand-ins for bench/e2e/worker.py's RPC (the
harness's own interface, not sglang code): they return the outputs and times
each test dictates, so the checks' verdicts and the arithmetic can be seen
to fail where they must.
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "e2e"))
import harness  # noqa: E402
import model  # noqa: E402
import run  # noqa: E402

NAMES = ["r4", "r8", "r16", "r32"]


class ScriptedSide:
    """Tokens are a function of (prompt, adapter); seconds = prefill + steps * step."""

    def __init__(self, step_s, tokens_fn, prefill_s=0.01):
        self.step_s, self.tokens_fn, self.prefill_s = step_s, tokens_fn, prefill_s
        self.calls = []

    def call(self, op, input_ids, lora_path, max_new_tokens, return_logprob=False):
        assert op == "generate"
        self.calls.append((len(input_ids), tuple(lora_path), max_new_tokens))
        outputs = []
        for ids, lora in zip(input_ids, lora_path):
            toks = [self.tokens_fn(ids, lora, k) for k in range(max_new_tokens)]
            item = {"output_ids": toks}
            if return_logprob:
                item["logprobs"] = [-1.0 - 0.001 * t for t in toks]
                # A runner-up a whole unit behind: no step is a near tie.
                item["top"] = [
                    [[t, lp], [t + 1, lp - 1.0]]
                    for t, lp in zip(toks, item["logprobs"])
                ]
            outputs.append(item)
        step = (
            self.step_s(len(input_ids), lora_path[0])
            if callable(self.step_s)
            else self.step_s
        )
        return {
            "seconds": self.prefill_s + (max_new_tokens - 1) * step,
            "outputs": outputs,
        }


def tokens(ids, lora, k):
    return (
        sum(ids) + k * 7 + (NAMES.index(lora) + 1) * 1000 if lora else sum(ids) + k * 7
    ) % 5000


def check(pin, ours):
    return harness.check_outputs(
        {"pin": pin, "ours": ours},
        NAMES,
        prompt_len=8,
        new_tokens=4,
        seed=1,
        logprob_atol=0.02,
    )


def test_check_passes_on_identical_sides_and_mixes_every_adapter():
    pin, ours = ScriptedSide(1e-3, tokens), ScriptedSide(1e-3, tokens)
    report = check(pin, ours)
    assert report["failures"] == []
    assert {r["lora"] for r in report["requests"]} == set(NAMES) | {None}
    batch = tuple(x for n in NAMES for x in (n, None))
    assert pin.calls == [(8, batch, 4)] + [(1, (x,), 4) for x in batch]
    assert report["batch_dependent"] == {"pin": [], "ours": []}


def test_check_reports_requests_whose_tokens_depend_on_the_batch():
    class Leaky(ScriptedSide):
        """Requests without an adapter pick up the adapters of their batch."""

        def call(self, op, input_ids, lora_path, max_new_tokens, return_logprob=False):
            result = super().call(
                op, input_ids, lora_path, max_new_tokens, return_logprob
            )
            if any(lora_path):
                for item, lora in zip(result["outputs"], lora_path):
                    if lora is None:
                        item["output_ids"] = [t + 1 for t in item["output_ids"]]
                        for top in item.get("top", []):
                            top[:] = [[t + 1, lp] for t, lp in top]
            return result

    report = check(Leaky(1e-3, tokens), ScriptedSide(1e-3, tokens))
    assert report["batch_dependent"] == {"pin": [1, 3, 5, 7], "ours": []}
    assert len(report["failures"]) == 4  # the leaked tokens also differ from ours


def test_check_fails_when_ours_differs_in_one_token():
    def off_by_one(ids, lora, k):
        return tokens(ids, lora, k) + (k == 2 and lora == "r16")

    report = check(ScriptedSide(1e-3, tokens), ScriptedSide(1e-3, off_by_one))
    assert len(report["failures"]) == 1 and "position 2" in report["failures"][0]


def test_check_explains_a_flip_to_a_token_the_pin_nearly_ties_only():
    class NearTie(ScriptedSide):
        """At step 2 of request 4 the pin's top tokens are its own, a third
        token 0.5 behind and ours' token `gap` behind, listed in `order`."""

        def __init__(self, gap, order=(0, 1, 2)):
            super().__init__(1e-3, tokens)
            self.gap, self.order = gap, order

        def call(self, op, input_ids, lora_path, max_new_tokens, return_logprob=False):
            result = super().call(
                op, input_ids, lora_path, max_new_tokens, return_logprob
            )
            if return_logprob:
                (best, lp), _ = result["outputs"][4]["top"][2]
                top = [[best, lp], [best + 2, lp - 0.5], [best + 1, lp - self.gap]]
                result["outputs"][4]["top"][2] = [top[k] for k in self.order]
            return result

    def ours_flips(ids, lora, k):
        return tokens(ids, lora, k) + (k == 2 and lora == "r16")

    class Noisy(ScriptedSide):
        """Ours' logprobs 1e-3 off the pin's: the rounding noise of the check."""

        def call(self, *args, **kwargs):
            result = super().call(*args, **kwargs)
            for item in result["outputs"]:
                if "logprobs" in item:
                    item["logprobs"] = [lp + 1e-3 for lp in item["logprobs"]]
            return result

    report = check(NearTie(gap=2e-3), Noisy(1e-3, ours_flips))
    assert report["failures"] == []
    (flipped,) = [r for r in report["requests"] if not r["identical"]]
    assert flipped["lora"] == "r16" and flipped["first_diff"] == 2
    assert flipped["near_tie"]
    # The same flip where the pin's runner-up is far behind: a real difference.
    report = check(NearTie(gap=0.5), Noisy(1e-3, ours_flips))
    assert len(report["failures"]) == 1 and "position 2" in report["failures"][0]
    # An exact tie listed with ours' token first: found by id, not by rank.
    report = check(NearTie(gap=0, order=(2, 0, 1)), Noisy(1e-3, ours_flips))
    assert report["failures"] == [] and report["requests"][4]["pin_gap"] == 0

    # Ours' token among the pin's top, but as far behind as a real difference.
    def ours_picks(offset):
        return lambda i, lora, k: tokens(i, lora, k) + offset * (
            k == 2 and lora == "r16"
        )

    report = check(NearTie(gap=2e-3), Noisy(1e-3, ours_picks(2)))
    assert len(report["failures"]) == 1 and "0.5 below" in report["failures"][0]
    # Or not among the pin's top tokens at all.
    report = check(NearTie(gap=2e-3), Noisy(1e-3, ours_picks(9)))
    assert len(report["failures"]) == 1 and "inf below" in report["failures"][0]


def test_check_fails_when_an_adapter_does_not_change_the_pins_tokens():
    def r8_is_noop(ids, lora, k):
        return tokens(ids, None if lora == "r8" else lora, k)

    report = check(ScriptedSide(1e-3, r8_is_noop), ScriptedSide(1e-3, r8_is_noop))
    assert report["adapters_matter_first_diff"]["r8"] is None
    assert report["failures"] == [
        "adapter r8 does not change the pin's tokens (raise --adapter-std)"
    ]


def test_cross_mode_sets_each_side_under_graphs_against_the_pin_eager():
    def requests(pin, ours):
        return {"requests": [{"pin": p, "ours": o} for p, o in zip(pin, ours)]}

    checks = {
        "graphs": requests([[1], [2]], [[5], [6]]),
        "eager": requests([[5], [7]], [[5], [7]]),
    }
    assert run.cross_mode(checks) == {
        "ours graphs vs pin eager": [True, False],
        "pin graphs vs pin eager": [False, False],
    }
    assert run.cross_mode({"graphs": checks["graphs"]}) == {}


def test_the_pin_is_the_reference_eagerly_and_alone_under_graphs():
    both = {"graphs", "eager", "graphs+ve"}
    assert run.pin_is_reference("eager", both)
    assert not run.pin_is_reference("graphs", both)
    assert run.pin_is_reference("graphs+ve", both)  # no eager+ve run
    assert run.pin_is_reference("graphs", {"graphs"})


def test_graph_failures_set_ours_graphs_against_ours_eager():
    def requests(ours):
        return {"requests": [{"lora": None, "pin": [0], "ours": o} for o in ours]}

    checks = {"graphs": requests([[5], [6]]), "eager": requests([[5], [7]])}
    (failure,) = run.graph_failures(checks)
    assert failure.startswith("graphs: request 1")
    checks["eager"] = requests([[5], [6]])
    assert run.graph_failures(checks) == []
    assert run.graph_failures({"graphs": checks["graphs"]}) == []


def test_measure_takes_the_decode_step_from_two_lengths():
    # pin: 2 ms per step with an adapter, 1 ms without; ours 10% faster with one.
    pin = ScriptedSide(lambda bs, lora: 2e-3 if lora else 1e-3, tokens, prefill_s=0.5)
    ours = ScriptedSide(
        lambda bs, lora: 1.8e-3 if lora else 1e-3, tokens, prefill_s=0.7
    )
    rows, mismatches = harness.measure(
        {"pin": pin, "ours": ours},
        NAMES,
        [1, 8],
        ["r32", "none"],
        repeats=3,
        decode_steps=16,
        prompt_len=8,
        seed=0,
    )
    assert mismatches == []
    by = {(r["bs"], r["workload"]): r for r in rows}
    assert by[(8, "r32")]["pin"]["step_ms"] == pytest.approx(2.0)
    assert by[(8, "r32")]["ours"]["tok_s"] == pytest.approx(8 / 1.8e-3)
    assert len(by[(1, "none")]["ours"]["samples_ms"]) == 3
    table = run.speed_table(rows)
    assert "| 8 | r32 |" in table and "+11.1%" in table and "| none |" not in table


def test_measure_reports_outputs_that_differ_between_sides():
    def other(ids, lora, k):
        return tokens(ids, lora, k) + 1

    _, mismatches = harness.measure(
        {"pin": ScriptedSide(1e-3, tokens), "ours": ScriptedSide(1e-3, other)},
        NAMES,
        [1],
        ["mixed"],
        repeats=1,
        decode_steps=4,
        prompt_len=8,
        seed=0,
    )
    assert [m["round"] for m in mismatches] == [0, 1]


def test_adapter_is_peft_shaped_and_seeded(tmp_path):
    config = model.model_config(layers=1, experts=2, topk=1)
    from safetensors.torch import load_file

    a = model.write_adapter(tmp_path / "a", config, rank=4, seed=3, std=0.02)
    b = model.write_adapter(tmp_path / "b", config, rank=4, seed=3, std=0.02)
    wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(
        str(b / "adapter_model.safetensors")
    )
    key = "base_model.model.model.layers.0.mlp.experts.1.down_proj.lora_B.weight"
    assert wa[key].shape == (2048, 4) and wa[key].abs().max() > 0
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert len(wa) == 2 * (4 + 2 * 3)
    assert sum(t.numel() * 2 for t in wa.values()) == model.adapter_bytes(config, 4)
    cfg = json.loads((a / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == cfg["lora_alpha"] == 4


def test_modes_parse_and_reject():
    assert harness.Mode.parse("eager+ve") == harness.Mode(
        graphs=False, virtual_experts=True
    )
    with pytest.raises(ValueError, match="expected graphs"):
        harness.Mode.parse("graph")
