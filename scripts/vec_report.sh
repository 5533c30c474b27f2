#!/usr/bin/env bash
# Shows that the CPU hot loops are vectorised: disassembles the built kernel object and counts, per
# kernel entry point and instruction-set clone, the packed (vector) divisions and floors
# (vdivps/vroundps on ymm registers = 8 floats at a time; divps/roundps on xmm = 4) that the step
# loops compile to. Run after a build (`make install`).
set -euo pipefail
cd "$(dirname "$0")/.."
obj=$(find build -name lif.o -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2)
[ -n "$obj" ] || { echo "no build/**/lif.o: build first (make install)" >&2; exit 1; }
echo "object: $obj"
printf '%-28s %-8s %8s %8s %8s %8s\n' kernel clone ymm-div ymm-round xmm-div scalar-div
objdump -d --no-show-raw-insn "$obj" | c++filt | awk '
  /^[0-9a-f]+ <.*>:$/ {
    name = $0; sub(/^[0-9a-f]+ <(lif::cpu::)?(\(anonymous namespace\)::)?/, "", name)
    clone = "default"; if (name ~ /clone \.avx2/) clone = "avx2"; else if (name ~ /clone \.sse4_1/) clone = "sse4.1"
    sub(/\(.*/, "", name); key = name " " clone; keys[key] = 1; next }
  key == "" { next }
  /vdivp[sd].*ymm/ { yd[key]++ } /vroundp[sd].*ymm/ { yr[key]++ }
  /[^v]divp[sd]|vdivp[sd].*xmm/ { xd[key]++ } /divs[sd]/ { sd[key]++ }
  END { for (k in keys) if (k ~ /_(fwd|bwd)/) { split(k, a, " "); printf "%-28s %-8s %8d %8d %8d %8d\n", a[1], a[2], yd[k], yr[k], xd[k], sd[k] } }' | sort
