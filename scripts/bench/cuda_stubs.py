#!/usr/bin/env python3
"""Generate stub CUDA shared libraries so the PyPI (CUDA) torch wheel imports on a CPU-only box.

For every undefined dynamic symbol of torch/lib/*.so that is not defined by torch itself or
the system libs, emit a function returning an error code (100 == cudaErrorNoDevice) into a stub
library carrying the exact SONAME (and symbol-version node) that torch expects.
"""
import collections, glob, os, re, subprocess, sys

torch_lib = sys.argv[1]
out = sys.argv[2]
os.makedirs(out, exist_ok=True)

def dynsyms(path, defined):
    args = ["nm", "-D", "--defined-only" if defined else "--undefined-only", path]
    r = subprocess.run(args, capture_output=True, text=True)
    syms = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts:
            syms.append(parts[-1])
    return syms

libs = sorted(glob.glob(os.path.join(torch_lib, "*.so*")))
undef = set()
defined = set()
for l in libs:
    undef.update(dynsyms(l, False))
    defined.update(s.split("@")[0] for s in dynsyms(l, True))

# SONAMEs torch needs that are not present anywhere on the system
needed = set()
for l in libs:
    r = subprocess.run(["readelf", "-d", l], capture_output=True, text=True).stdout
    needed.update(re.findall(r"NEEDED\).*\[(.*)\]", r))
cuda_sonames = sorted(n for n in needed if re.match(
    r"lib(cu|nv|nccl|cufile)", n))

UNVERSIONED = [
    (r"^nccl", "libnccl.so.2"),
    (r"^cusparseLt", "libcusparseLt.so.0"),
    (r"^cuFile", "libcufile.so.0"),
    (r"^nvshmem", "libnvshmem_host.so.3"),
    (r"^cu[A-Z]", "libcuda.so.1"),
]
VERSION_TO_LIB = {"NVSHMEM": "libnvshmem_host.so.3"}

per_lib = collections.defaultdict(lambda: collections.defaultdict(set))  # lib -> version -> syms
for s in undef:
    name, _, ver = s.partition("@")
    ver = ver.lstrip("@")
    if name in defined:
        continue
    lib = None
    if ver:
        if ver in cuda_sonames or ver in VERSION_TO_LIB:
            lib = VERSION_TO_LIB.get(ver, ver)
        else:
            continue
    else:
        for pat, l in UNVERSIONED:
            if re.match(pat, name):
                lib = l
                break
        if lib is None:
            continue
    per_lib[lib][ver or None].add(name)

for so in cuda_sonames + ["libcuda.so.1"]:
    per_lib.setdefault(so, collections.defaultdict(set))

# versions required via verneed (must exist even if no missing symbol)
for l in libs:
    r = subprocess.run(["readelf", "-W", "-V", l], capture_output=True, text=True).stdout
    cur = None
    for line in r.splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"Name: (\S+)", line)
        if m and cur in per_lib:
            per_lib[cur].setdefault(m.group(1), set())

STRING_FN = re.compile(r"(ErrorString|StatusString|GetErrorName|GetString)$")
for so, vers in sorted(per_lib.items()):
    c = ['/* generated stub for %s: every function fails with 100 (no device) */' % so]
    allsyms = sorted(set().union(*vers.values())) if vers else []
    for s in allsyms:
        if STRING_FN.search(s):
            c.append('const char* %s(void){return "cuda stub: no device";}' % s)
        else:
            c.append("long %s(void){return 100;}" % s)
    base = os.path.join(out, so)
    with open(base + ".c", "w") as f:
        f.write("\n".join(c) + "\n")
    vs = []
    named = [v for v in vers if v]
    for v in named:
        syms = sorted(vers[v])
        vs.append("%s {\n  global:\n%s  local: *;\n};" % (
            v, "".join("    %s;\n" % s for s in syms) if syms else ""))
    unv = sorted(vers.get(None, set()))
    cmd = ["gcc", "-shared", "-fPIC", "-O0", "-o", base, base + ".c", "-Wl,-soname," + so]
    if named:
        if unv:
            # unversioned refs bind to any default-version def; put them in first node
            vs[0] = vs[0].replace("  global:\n", "  global:\n" + "".join("    %s;\n" % s for s in unv), 1)
        with open(base + ".map", "w") as f:
            f.write("\n".join(vs) + "\n")
        cmd.append("-Wl,--version-script=" + base + ".map")
    subprocess.check_call(cmd)
    print(so, {k: len(v) for k, v in vers.items()})
