"""sglang's Engine, pin vs patched tree, on a small Qwen3-MoE: same tokens.

Runs on a CUDA machine through tools/e2e.sh (make e2e), which builds both trees
and sets E2E_PIN_TREE and E2E_OURS_TREE; skipped elsewhere. Both engines serve
one batch mixing every adapter with requests without one, eagerly and under
CUDA graphs: each adapter must change the pin's tokens, the patched tree must
give the eager pin's tokens and logprobs (or differ first at a near tie), and
its tokens under graphs must be its eager ones.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN, OURS = os.environ.get("E2E_PIN_TREE"), os.environ.get("E2E_OURS_TREE")
if not (PIN and OURS):
    pytest.skip(
        "needs E2E_PIN_TREE and E2E_OURS_TREE (run 'make e2e')", allow_module_level=True
    )

sys.path.insert(0, str(ROOT / "bench" / "e2e"))
import run  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e-small")
    argv = [
        "--pin-tree",
        PIN,
        "--ours-tree",
        OURS,
        "--work-dir",
        str(work),
        "--layers",
        "2",
        "--experts",
        "16",
        "--topk",
        "4",
        "--ranks",
        "8,16,32,64",
        "--modes",
        "graphs,eager",
        "--batch-sizes",
        "8",
        "--check-only",
        "--max-total-tokens",
        "4096",
        "--mem-fraction",
        "0.5",
    ]
    status = run.main(argv)
    import json

    return status, json.loads((work / "results" / "results.json").read_text())


@pytest.mark.parametrize("mode", ["graphs", "eager"])
def test_adapters_change_the_pins_tokens(results, mode):
    _, res = results
    first_diff = res["checks"][mode]["adapters_matter_first_diff"]
    assert sorted(first_diff) == ["r16", "r32", "r64", "r8"]
    assert all(pos is not None for pos in first_diff.values()), first_diff


def test_ours_gives_the_pins_tokens_eagerly(results):
    _, res = results
    check = res["checks"]["eager"]
    assert check["batch"] == 8 and {r["lora"] for r in check["requests"]} == {
        "r8",
        "r16",
        "r32",
        "r64",
        None,
    }
    assert check["failures"] == []
    assert all(len(r["pin"]) == check["new_tokens"] for r in check["requests"])


def test_ours_under_graphs_gives_its_eager_tokens(results):
    # The eager pin is the reference: 0.5.12's graph path assigns adapters
    # to tokens that do not use them (bench/e2e/graph_padding.py).
    _, res = results
    graphs, eager = res["checks"]["graphs"], res["checks"]["eager"]
    assert [r["ours"] for r in graphs["requests"]] == [
        r["ours"] for r in eager["requests"]
    ]


def test_run_reports_success(results):
    status, res = results
    assert status == 0 and res["failures"] == []
