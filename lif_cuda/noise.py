"""The in-kernel noise stream, written out in NumPy (SPEC §4).

The fused kernels draw z[b,t,n] = noise_scale * N(0,1), where the standard normal of element
(b, t, n) of a (B,T,N) call is a pure function of (seed, offset, r = b*N + n, t) (csrc/lif_core.h):

  block    = Philox4x32-10(key=seed, counter=(offset + t // 4) mod 2^64 + 2^64 * r)  -> words w0..w3
             (= at::Philox4_32(seed, subsequence=r, offset=offset + t // 4); torch's convention:
             one subsequence per neuron row, the position advancing along it)
  lane     = t % 4: one block serves four consecutive steps of one neuron;
             pair (w0, w1) serves lanes 0, 1 and (w2, w3) lanes 2, 3
  radius   = sqrt(-2 log(((w_u >> 8) + 1) / 2^24))
  angle    = 2 pi (w_a >> 8) / 2^24, minus a quarter turn for odd lanes (cos for even, sin for odd)
  normal   = radius * cos(angle)

with log and cos evaluated by fixed float32 series, each operation rounded as written. This module
computes the same values bit for bit; the reference backend uses it so that it draws exactly the
noise the fused kernels draw, and the tests use it to pin the kernels' stream down.
"""
import math
from typing import List

import numpy as np
import torch

__all__ = ["draw_noise_key", "philox_normals", "standard_normals", "kernel_noise", "kernel_noise_scale", "torch_noise"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
f32 = np.float32


def draw_noise_key(generator=None):
    """(seed, offset) for one call, drawn from torch's default CPU generator (or `generator`):
    torch.manual_seed makes it reproducible, whatever device the call runs on."""
    return torch.empty(2, dtype=torch.int64).random_(generator=generator)


def _philox_blocks(seed, offset, subsequence, position):
    """Philox4x32-10 words [w0, w1, w2, w3] (uint32 arrays) of the blocks at counter
    (offset + position) mod 2^64 + 2^64 * subsequence (uint64 arrays, broadcast) under key `seed`."""
    seed, offset = np.uint64(seed & 0xFFFFFFFFFFFFFFFF), np.uint64(offset & 0xFFFFFFFFFFFFFFFF)
    subsequence, position = np.broadcast_arrays(np.asarray(subsequence, np.uint64), np.asarray(position, np.uint64))
    with np.errstate(over="ignore"):
        ctr = position + offset  # modulo 2^64
    c0, c1 = ctr & _MASK32, ctr >> np.uint64(32)
    c2, c3 = subsequence & _MASK32, subsequence >> np.uint64(32)
    k0 = np.uint32(seed & _MASK32)
    k1 = np.uint32(seed >> np.uint64(32))
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0 = np.uint32((int(k0) + int(_W0)) & 0xFFFFFFFF)
        k1 = np.uint32((int(k1) + int(_W1)) & 0xFFFFFFFF)
    return [w.astype(np.uint32) for w in (c0, c1, c2, c3)]


def _det_log(x):
    b = x.view(np.uint32)
    e = ((b >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32) - np.int32(127)
    m = ((b & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000)).view(np.float32)
    big = m > f32(1.41421356)
    m = np.where(big, m * f32(0.5), m)
    e = np.where(big, e + np.int32(1), e)
    r = (m - f32(1)) / (m + f32(1))
    r2 = r * r
    p = np.full_like(r, f32(1) / f32(11))
    for c in (f32(1) / f32(9), f32(1) / f32(7), f32(1) / f32(5), f32(1) / f32(3), f32(1)):
        p = p * r2 + c
    return (f32(2) * r) * p + e.astype(np.float32) * f32(0.693147182)


def _det_sin(x):
    x2 = x * x
    p = np.full_like(x, -f32(1) / f32(39916800))
    for c in (f32(1) / f32(362880), -f32(1) / f32(5040), f32(1) / f32(120), -f32(1) / f32(6), f32(1)):
        p = p * x2 + c
    return x * p


def _det_cos(x):
    x2 = x * x
    p = np.full_like(x, -f32(1) / f32(3628800))
    for c in (f32(1) / f32(40320), -f32(1) / f32(720), f32(1) / f32(24), -f32(0.5), f32(1)):
        p = p * x2 + c
    return p


def _box_muller_pair(w_u, w_a):
    """Both steps of a Box-Muller pair, as lif_core.h's box_muller_pair: the radius from w_u, the
    angle theta = 2 pi k / 2^24 (k = w_a >> 8) reduced to phi in its octant in integers; one phi,
    sine and cosine serve the even step (r cos theta) and the odd one (r sin theta)."""
    u = ((w_u >> np.uint32(8)) + np.uint32(1)).astype(np.float32) * (f32(1) / f32(16777216))
    radius = np.sqrt(f32(-2) * _det_log(u))
    k = (w_a >> np.uint32(8)) & np.uint32(0xFFFFFF)
    octant = (k >> np.uint32(21)) & np.uint32(7)
    f = k & np.uint32(0x1FFFFF)
    f = np.where(octant & np.uint32(1), np.uint32(0x200000) - f, f)
    phi = f.astype(np.float32) * (f32(6.28318531) / f32(16777216))
    c, s = _det_cos(phi), _det_sin(phi)
    v_even = np.where(((octant + np.uint32(1)) & np.uint32(2)) != 0, s, c)
    v_odd = np.where(((octant + np.uint32(7)) & np.uint32(2)) != 0, s, c)
    z_even = radius * np.where(((octant + np.uint32(2)) & np.uint32(4)) != 0, -v_even, v_even)
    z_odd = radius * np.where((octant & np.uint32(4)) != 0, -v_odd, v_odd)
    return z_even, z_odd


def philox_normals(seed, offset, subsequence, step):
    """The kernels' standard normal (float32) of time step `step` of subsequence `subsequence`
    (= b*N + n), integer arrays broadcast against each other."""
    subsequence, step = np.broadcast_arrays(np.asarray(subsequence, np.uint64), np.asarray(step, np.uint64))
    words = _philox_blocks(int(seed), int(offset), subsequence, step >> np.uint64(2))
    lane = (step & np.uint64(3)).astype(np.uint32)
    pair = lane & np.uint32(2)
    w_u = np.where(pair == 0, words[0], words[2])
    w_a = np.where(pair == 0, words[1], words[3])
    z_even, z_odd = _box_muller_pair(w_u, w_a)
    return np.where((lane & np.uint32(1)) != 0, z_odd, z_even)


def standard_normals(shape, key):
    """The (B,T,N) standard normals (float32 NumPy array) the fused kernels draw for this key:
    each Philox block computed once, for four consecutive steps of one neuron."""
    B, T, N = shape
    seed, offset = (int(v) for v in key.tolist())
    blocks = (T + 3) // 4
    sub = np.arange(B * N, dtype=np.uint64)[:, None]
    w = _philox_blocks(seed, offset, sub, np.arange(blocks, dtype=np.uint64)[None, :])  # (B*N, blocks) each
    lanes = [*_box_muller_pair(w[0], w[1]), *_box_muller_pair(w[2], w[3])]
    z = np.stack(lanes, axis=-1).reshape(B, N, 4 * blocks)[:, :, :T]  # (B, N, T): step 4q + lane
    return np.ascontiguousarray(z.transpose(0, 2, 1))


def kernel_noise(shape, noise_scale, key, dtype=torch.float32, device="cpu"):
    """The (B,T,N) noise term the fused kernels add for this key: noise_scale * N(0,1), the scale
    rounded to `dtype` first (as the kernels do)."""
    z = torch.from_numpy(standard_normals(tuple(int(v) for v in shape), key))
    if dtype == torch.float64:
        return (torch.tensor(noise_scale, dtype=torch.float64) * z.double()).to(device)
    return (torch.tensor(noise_scale, dtype=torch.float32) * z).to(device=device, dtype=dtype)


def torch_noise(noise_std: float, dt: float, shape: List[int], dtype: torch.dtype, device: torch.device):
    """noise="torch": Rockpool's draw, noise_std * sqrt(dt) * torch.randn(shape), bit for bit under one
    seed. sqrt(dt) is a 0-dim CPU tensor (as Rockpool's): it multiplies a CUDA tensor without a copy
    to the device. TorchScript compiles it too (the modules' scripted forwards call it)."""
    zeta = noise_std * torch.sqrt(torch.tensor(dt, dtype=dtype))
    return zeta * torch.randn(shape, dtype=dtype, device=device)


def kernel_noise_scale(noise_std: float, dt: float) -> float:
    """The scale of the in-kernel noise, noise_std * sqrt(dt) (SPEC §4); 0 for none. TorchScript
    compiles it too."""
    return noise_std * math.sqrt(dt) if noise_std > 0 else 0.0
