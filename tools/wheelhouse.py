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
        for tag, target in (("#machine:", machine), ("#unneeded:", unneeded)):
            if raw.startswith(tag):
                name, _, version = raw[len(tag) :].strip().partition("==")
                if isinstance(target, set):
                    target.add(canon(name))
                else:
                    target[canon(name)] = version or None
                break
        else:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
            if not m:
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
    env = default_environment()
    env.update(
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
    problems = []
    for name, version in wanted.items():
        entries = have.get(name, [])
        if len(entries) != 1 or Version(entries[0][0]) != Version(version):
            problems.append(
                f"{name}=={version}: wanted one wheel, found {[p.name for _, p in entries]}"
            )
    for name in have:
        if name not in wanted:
            problems.append(f"{name}: a wheel that no pin names")
    for name, entries in have.items():
        for _, path in entries:
            with zipfile.ZipFile(path) as z:
                meta = next(
                    n
                    for n in z.namelist()
                    if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
                )
                text = z.read(meta).decode()
            for line in text.split("\n\n", 1)[0].splitlines():
                if not line.startswith("Requires-Dist:"):
                    continue
                req = Requirement(line.split(":", 1)[1].strip())
                if req.marker is not None and not req.marker.evaluate(env):
                    continue
                dep = canon(req.name)
                if dep in unneeded:
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


def trim(src, dst_dir, local):
    """Repack the sglang-kernel wheel with its Python files and the SM90 ops library only."""

    def keep(name):
        if name.startswith("triton_kernels/"):
            return True  # pure Python, imported by sglang's MoE code
        if name.startswith("sgl_kernel/"):
            return not (
                name.startswith("sgl_kernel/sm100/")
                or name
                in ("sgl_kernel/flash_ops.abi3.so", "sgl_kernel/flashmla_ops.abi3.so")
            )
        return ".dist-info/" in name and not name.endswith("/RECORD")

    src = Path(src)
    name, version, *tags = src.name[: -len(".whl")].split("-")
    new_version = f"{version}+{local}"
    old_info = f"{name}-{version}.dist-info/"
    new_info = f"{name}-{new_version}.dist-info/"
    dst = Path(dst_dir) / f"{name}-{new_version}-{'-'.join(tags)}.whl"
    tmp = dst.with_suffix(".tmp")
    record = []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(
        tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9
    ) as zout:
        for info in zin.infolist():
            if info.is_dir() or not keep(info.filename):
                continue
            data = zin.read(info)
            arcname = info.filename
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
            out = zipfile.ZipInfo(arcname, date_time=info.date_time)
            out.external_attr = info.external_attr
            out.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(out, data)
            digest = hashlib.sha256(data).digest()
            b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            record.append(f"{arcname},sha256={b64},{len(data)}")
        record.append(f"{new_info}RECORD,,")
        out = zipfile.ZipInfo(new_info + "RECORD", date_time=(2000, 1, 1, 0, 0, 0))
        out.external_attr = 0o100644 << 16
        out.compress_type = zipfile.ZIP_DEFLATED
        zout.writestr(out, "\n".join(record) + "\n")
    names = {r.split(",", 1)[0] for r in record}
    for needed in (
        "sgl_kernel/__init__.py",
        "sgl_kernel/load_utils.py",
        "sgl_kernel/sm90/common_ops.abi3.so",
        "triton_kernels/__init__.py",
    ):
        if needed not in names:
            tmp.unlink()
            sys.exit(f"error: {src.name} has no {needed}; the trim would be unusable")
    tmp.rename(dst)
    print(dst.name)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"missing": missing, "check": check, "report": report, "trim": trim}[cmd](*args)
