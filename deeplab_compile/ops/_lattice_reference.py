"""The permutohedral lattice in plain PyTorch tensor ops (slow, obviously correct).

The same construction as ``csrc/common/lattice_math.h`` (Adams, Baek and Davis 2010),
vectorised over points: lift, round, rank, barycentric weights, then distinct vertices
by ``torch.unique`` and neighbours by ``searchsorted`` on a mixed-radix key code.
Used as the fallback of the compiled ops and as their reference in tests.  Because it
is built from differentiable tensor ops, autograd differentiates it with respect to
the filtered values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class RefLattice:
    d: int
    n: int
    vertex: torch.Tensor     # (n, d+1) vertex index of each simplex corner, 0..m-1
    weight: torch.Tensor     # (n, d+1) barycentric weights
    neighbors: torch.Tensor  # (d+1, 2, m) neighbour index along each axis, -1 = none
    m: int


def build(features: torch.Tensor) -> RefLattice:
    """Lattice of ``features`` (n, d)."""
    n, d = features.shape
    f = features
    dev, dt = f.device, f.dtype
    scale = torch.tensor([math.sqrt(2.0 / 3.0) * (d + 1) / math.sqrt((i + 1) * (i + 2)) for i in range(d)],
                         dtype=dt, device=dev)
    cf = f * scale
    suffix = torch.flip(torch.cumsum(torch.flip(cf, [1]), 1), [1])        # sum_{k>=i} cf[k]
    elevated = torch.empty(n, d + 1, dtype=dt, device=dev)
    elevated[:, 0] = suffix[:, 0]
    j = torch.arange(1, d + 1, device=dev, dtype=dt)
    tail = torch.cat([suffix[:, 1:], torch.zeros(n, 1, dtype=dt, device=dev)], 1)
    elevated[:, 1:] = tail - j * cf

    down = torch.tensor(1.0 / (d + 1), dtype=dt)
    v = elevated * down
    hi = torch.ceil(v) * (d + 1)
    lo = torch.floor(v) * (d + 1)
    rem0 = torch.where(hi - elevated < elevated - lo, hi, lo).long()
    total = torch.div(rem0, d + 1, rounding_mode="floor").sum(1, keepdim=True)

    res = elevated - rem0.to(dt)
    # rank[i] = #{j > i : res_j > res_i} + #{j < i : res_j >= res_i}
    ri, rj = res[:, :, None], res[:, None, :]
    idx = torch.arange(d + 1, device=dev)
    later = idx[None, :] > idx[:, None]
    rank = (((rj > ri) & later) | ((rj >= ri) & ~later & (idx[None, :] != idx[:, None]))).sum(2)
    rank = rank + total
    low, high = rank < 0, rank > d
    rank = torch.where(low, rank + d + 1, torch.where(high, rank - d - 1, rank))
    rem0 = torch.where(low, rem0 + d + 1, torch.where(high, rem0 - d - 1, rem0))

    vals = (elevated - rem0.to(dt)) * down
    bary = torch.zeros(n, d + 2, dtype=dt, device=dev)
    bary.scatter_add_(1, d - rank, vals)
    bary.scatter_add_(1, d - rank + 1, -vals)
    bary[:, 0] += 1 + bary[:, d + 1]
    weight = bary[:, : d + 1]

    r = torch.arange(d + 1, device=dev)
    canon = torch.where(rank[:, None, :d] <= d - r[None, :, None], r[None, :, None], r[None, :, None] - (d + 1))
    keys = rem0[:, None, :d] + canon                                   # (n, d+1, d)
    uniq, inverse = torch.unique(keys.reshape(-1, d), dim=0, return_inverse=True)
    m = uniq.shape[0]

    # Mixed-radix code, lexicographic like torch.unique's order, so searchsorted finds keys.
    lo_k = uniq.min(0).values - d - 1
    span = uniq.max(0).values - lo_k + d + 2
    if float(torch.prod(span.double())) >= 2.0 ** 62:
        raise ValueError("permutohedral_filter reference: feature range too large for 64-bit key codes; "
                         "scale the features down")
    mult = torch.ones(d, dtype=torch.long, device=dev)
    for i in range(d - 2, -1, -1):
        mult[i] = mult[i + 1] * span[i + 1]

    def code(k):
        return ((k - lo_k) * mult).sum(-1)

    codes = code(uniq)
    nbs = []
    for a in range(d + 1):
        n1 = uniq - 1
        n2 = uniq + 1
        if a < d:
            n1[:, a] = uniq[:, a] + d
            n2[:, a] = uniq[:, a] - d
        pair = []
        for nk in (n1, n2):
            c = code(nk)
            pos = torch.searchsorted(codes, c).clamp(max=m - 1)
            pair.append(torch.where(codes[pos] == c, pos, torch.full_like(pos, -1)))
        nbs.append(torch.stack(pair))
    return RefLattice(d=d, n=n, vertex=inverse.reshape(n, d + 1), weight=weight,
                      neighbors=torch.stack(nbs), m=m)


def filter(lat: RefLattice, values: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Splat ``values`` (n, V), blur along every axis, slice back (differentiable in values)."""
    d, m = lat.d, lat.m
    V = values.shape[1]
    contrib = (lat.weight[:, :, None] * values[:, None, :]).reshape(-1, V)
    buf = values.new_zeros(m + 1, V)                  # row 0 stands for "no vertex"
    buf = buf.index_add(0, lat.vertex.reshape(-1) + 1, contrib)
    axes = range(d, -1, -1) if reverse else range(d + 1)
    for a in axes:
        n1, n2 = lat.neighbors[a, 0] + 1, lat.neighbors[a, 1] + 1
        inner = buf[1:] + 0.5 * (buf[n1] + buf[n2])
        buf = torch.cat([buf[:1], inner], 0)
    alpha = 1.0 / (1.0 + 2.0 ** (-d))
    return alpha * (lat.weight[:, :, None] * buf[lat.vertex + 1]).sum(1)
