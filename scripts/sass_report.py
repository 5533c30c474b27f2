"""Register, stack and load-latency facts of the CUDA kernels, without a GPU (docs/gpu.md).

For each kernel of a compiled object (e.g. the lif.cu.o / synaptic.cu.o that `KEEP=1
.ci/check_cuda.sh` leaves in its temp dir) whose demangled name matches PATTERN: its registers and
stack (cuobjdump -res-usage), and for its main loop (the backward branch enclosing the most global
loads) how many instructions pass between each global load and the first instruction that reads
its register, wrapping around the loop (a load for the next iteration is first read there). A
small distance means the thread waits a memory latency soon after the load.

    python scripts/sass_report.py OBJECT PATTERN [--arch sm_90] [--cuobjdump PATH]

cuobjdump comes with the CUDA toolkit, or from the nvidia-cuda-cuobjdump wheel.
"""
import argparse
import re
import shutil
import subprocess


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    short = []
    for n in out.splitlines():
        n = re.sub(r"lif::gpu::\(anonymous namespace\)::", "", n)
        short.append(re.sub(r"\(lif::\w+<.*", "", n))
    return short


def resources(cuobjdump, obj, arch):
    txt = subprocess.run([cuobjdump, "-res-usage", "-arch", arch, obj], capture_output=True, text=True).stdout
    rows = re.findall(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+)", txt)
    return {m: (int(reg), int(stack)) for m, reg, stack in rows}


def main_loop_distances(sass):
    ins = [(int(a, 16), s.strip()) for a, s in re.findall(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", sass)]
    index = {a: i for i, (a, _) in enumerate(ins)}
    loops = []
    for i, (a, s) in enumerate(ins):
        m = re.search(r"BRA\s+.*?(0x[0-9a-f]+)", s)
        if m and int(m.group(1), 16) < a and int(m.group(1), 16) in index:
            loops.append((index[int(m.group(1), 16)], i))
    if not loops:
        return None, []
    lo, hi = max(loops, key=lambda lp: sum("LDG" in ins[k][1] for k in range(lp[0], lp[1] + 1)))
    body = ins[lo:hi + 1]
    dists = []
    for i, (_, s) in enumerate(body):
        m = re.match(r"(?:@!?P\w+\s+)?LDG\.\S+\s+(R\d+)", s)
        if not m:
            continue
        for d in range(1, len(body) + 1):
            parts = body[(i + d) % len(body)][1].split(None, 1)
            if len(parts) == 2:
                srcs = parts[1].split(",", 1)[1] if "," in parts[1] else parts[1]
                if re.search(rf"\b{m.group(1)}\b", srcs):
                    dists.append(d)
                    break
    return len(body), sorted(dists)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("object")
    p.add_argument("pattern", help="regular expression on the demangled kernel name")
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--cuobjdump", default=shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump")
    a = p.parse_args()
    res = resources(a.cuobjdump, a.object, a.arch)
    sass = subprocess.run([a.cuobjdump, "-sass", "-arch", a.arch, a.object], capture_output=True, text=True).stdout
    funcs = {f.split("\n", 1)[0].strip(): f for f in re.split(r"\n\s*Function : ", sass)[1:]}
    names = sorted(funcs)
    for mangled, name in zip(names, demangle(names)):
        if not re.search(a.pattern, name):
            continue
        reg, stack = res.get(mangled, (None, None))
        n, dists = main_loop_distances(funcs[mangled])
        loop = f"main loop {n} instructions, load -> first read {dists}" if n else "no loop"
        print(f"{name}: {reg} registers, stack {stack} B; {loop}")


if __name__ == "__main__":
    main()
