"""Print the registered CUDA tests under a directory, the way sglang's CI finds them.

Uses sglang's own parser (sglang.test.ci.ci_register), so a file counts exactly
when upstream CI would run it: it calls register_cuda_ci(...), is not disabled,
and has a __main__ entry.
"""

import sys
from pathlib import Path

from sglang.test.ci.ci_register import HWBackend, ut_parse_one_file


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} TEST_ROOT", file=sys.stderr)
        return 2
    root = Path(sys.argv[1])
    found = []
    for path in sorted(root.rglob("test_*.py")):
        registries, has_main = ut_parse_one_file(str(path))
        cuda = [r for r in registries if r.backend == HWBackend.CUDA and not r.disabled]
        if cuda and not has_main:
            print(
                f"error: {path} registers for CUDA CI but has no __main__ entry",
                file=sys.stderr,
            )
            return 1
        if cuda:
            found.append(path)
    if not found:
        print(f"error: no registered CUDA tests under {root}", file=sys.stderr)
        return 1
    print("\n".join(map(str, found)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
