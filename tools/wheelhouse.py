#!/usr/bin/env python3
"""The wheelhouses' helper (tools/fetch_gpu_wheels.sh, tools/fetch_e2e_wheels.sh).

    wheelhouse.py missing REQUIREMENTS DIR      print the pins without a wheel in DIR
    wheelhouse.py check REQUIREMENTS DIR BASE   every dependency met (or marked unneeded)
    wheelhouse.py report DIR MAX_MB             sizes; fail over the budget
    wheelhouse.py trim WHEEL DIR LOCAL          sglang-kernel's wheel cut down to its
        Python files and the SM90 ops library, as version +LOCAL in DIR (prints its name)
"""

import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

from pip._vendor.packaging.markers import default_environment
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.version import Version


def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path):
    """(pins, machine, unneeded): 'name==version' lines, '#machine:' and '#unneeded:' names."""
    wanted, machine, unneeded = {}, {}, set()
    for raw in Path(path).read_text().splitlines():
        if m := re.match(r"#(machine|unneeded):\s*([^=\s]+)(?:==(\S+))?", raw):
            if m[1] == "machine":
                machine[canon(m[2])] = m[3]
            else:
                unneeded.add(canon(m[2]))
        elif line := raw.split("#", 1)[0].strip():
            if not (m := re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)):
                sys.exit(f"error: {path}: '{line}' is not an exact 'name==version' pin")
            wanted[canon(m[1])] = m[2]
    return wanted, machine, unneeded


def wheels(directory):
    found = {}
    for path in sorted(Path(directory).glob("*.whl")):
        name, version = path.name.split("-")[:2]
        found.setdefault(canon(name), []).append((version, path))
    return found


def missing(req_file, directory):
    wanted, _, _ = pins(req_file)
    for name, entries in wheels(directory).items():
        for version, path in entries:
            if name not in wanted or Version(wanted[name]) != Version(version):
                print(
                    f"==> removing {path.name}: not pinned in {req_file}",
                    file=sys.stderr,
                )
                path.unlink()
    have = wheels(directory)
    for name, version in wanted.items():
        if not any(Version(v) == Version(version) for v, _ in have.get(name, [])):
            print(f"{name}=={version}")


def check(req_file, directory, base_file):
    wanted, machine, unneeded = pins(req_file)
    base, base_machine, _ = pins(base_file)
    provided = {**base_machine, **machine, **base, **wanted}
    # The GPU machine's markers: CPython 3.12 on x86-64 Linux.
    env = default_environment() | dict(
        python_version="3.12",
        python_full_version="3.12.3",
        implementation_name="cpython",
        platform_python_implementation="CPython",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        os_name="posix",
        extra="",
    )
    have = wheels(directory)
    problems = [
        f"{name}=={version}: wanted one wheel, found {[p.name for _, p in entries]}"
        for name, version in wanted.items()
        for entries in [have.get(name, [])]
        if len(entries) != 1 or Version(entries[0][0]) != Version(version)
    ]
    problems += [
        f"{name}: a wheel that no pin names" for name in have if name not in wanted
    ]
    for path in (path for entries in have.values() for _, path in entries):
        with zipfile.ZipFile(path) as z:
            meta = next(
                n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)
            )
            headers = z.read(meta).decode().split("\n\n", 1)[0]
        for line in re.findall(r"^Requires-Dist:(.*)$", headers, re.M):
            req = Requirement(line.strip())
            dep = canon(req.name)
            if (req.marker and not req.marker.evaluate(env)) or dep in unneeded:
                continue
            if dep not in provided:
                problems.append(
                    f"{path.name} needs {req}: not pinned, not on the machine, not marked unneeded"
                )
            elif provided[dep] is not None and not req.specifier.contains(
                provided[dep], prereleases=True
            ):
                problems.append(
                    f"{path.name} needs {req}, but {dep}=={provided[dep]} is what it gets"
                )
    if problems:
        sys.exit("error: e2e wheelhouse check failed:\n  " + "\n  ".join(problems))


def report(directory, max_mb):
    paths = sorted(Path(directory).glob("*.whl"))
    total = sum(p.stat().st_size for p in paths)
    for p in paths:
        print(f"  {p.stat().st_size / 1e6:7.2f} MB  {p.name}")
    print(f"  {total / 1e6:7.2f} MB  total, {len(paths)} wheels in {directory}")
    if total > float(max_mb) * 1e6:
        sys.exit(
            f"error: {directory} is {total / 1e6:.2f} MB, over its {max_mb} MB budget "
            f"(it travels to the GPU machine with build/gpu-wheels and the pin within 64 MiB)"
        )


def keep(name):
    """What the trimmed sglang-kernel wheel keeps: the Python files, the SM90 ops library."""
    if name.startswith("sgl_kernel/"):
        return not name.startswith(("sgl_kernel/sm100/", *SKIPPED_OPS))
    # triton_kernels: pure Python, imported by sglang's MoE code.
    return name.startswith("triton_kernels/") or (
        ".dist-info/" in name and not name.endswith("/RECORD")
    )


SKIPPED_OPS = ("sgl_kernel/flash_ops.abi3.so", "sgl_kernel/flashmla_ops.abi3.so")
NEEDED = (
    "sgl_kernel/__init__.py",
    "sgl_kernel/load_utils.py",
    "sgl_kernel/sm90/common_ops.abi3.so",
    "triton_kernels/__init__.py",
)


def trim(src, dst_dir, local):
    """Repack the sglang-kernel wheel SRC as version +LOCAL in DST_DIR, as keep() says."""
    src = Path(src)
    name, version, *tags = src.name[: -len(".whl")].split("-")
    new_version = f"{version}+{local}"
    old_info, new_info = (
        f"{name}-{version}.dist-info/",
        f"{name}-{new_version}.dist-info/",
    )
    dst = Path(dst_dir) / f"{name}-{new_version}-{'-'.join(tags)}.whl"
    tmp, record = dst.with_suffix(".tmp"), []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(
        tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9
    ) as zout:

        def add(arcname, data, date_time, external_attr):
            out = zipfile.ZipInfo(arcname, date_time=date_time)
            out.external_attr, out.compress_type = external_attr, zipfile.ZIP_DEFLATED
            zout.writestr(out, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
            record.append(
                f"{arcname},sha256={digest.rstrip(b'=').decode()},{len(data)}"
            )

        for info in zin.infolist():
            if info.is_dir() or not keep(info.filename):
                continue
            data, arcname = zin.read(info), info.filename
            if arcname.startswith(old_info):
                arcname = new_info + arcname[len(old_info) :]
            if arcname == new_info + "METADATA":
                text, n = re.subn(
                    r"^Version: .*$",
                    f"Version: {new_version}",
                    data.decode(),
                    count=1,
                    flags=re.M,
                )
                assert n == 1, "no Version line in METADATA"
                data = text.encode()
            add(arcname, data, info.date_time, info.external_attr)
        record.append(f"{new_info}RECORD,,")
        out = zipfile.ZipInfo(new_info + "RECORD", date_time=(2000, 1, 1, 0, 0, 0))
        out.external_attr, out.compress_type = 0o100644 << 16, zipfile.ZIP_DEFLATED
        zout.writestr(out, "\n".join(record) + "\n")
    missing = [n for n in NEEDED if not any(r.startswith(n + ",") for r in record)]
    if missing:
        tmp.unlink()
        sys.exit(f"error: {src.name} has no {missing[0]}; the trim would be unusable")
    tmp.rename(dst)
    print(dst.name)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"missing": missing, "check": check, "report": report, "trim": trim}[cmd](*args)
