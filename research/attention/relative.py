"""Position schemes that the softmax variants compose with: RoPE, ALiBi, T5 buckets, Shaw.

A scheme sees attention in tiles: queries at positions q0 + t (t < T) against keys at k0 + s
(s < S). Its biases depend only on the relative position `rel_TS = s - t + offset`,
offset = k0 - q0, so the same code serves the whole sequence (offset 0, the dense path) and the
block-sparse kernel's tiles (offset traced inside its scan).

A `Position` says which terms it adds (`adds_bias`, `adds_value`, asked by every path) and
implements the hooks:
  rotate(q_BTHD, k_BSHD) -> (q, k)       applied to whole sequences before any tiling (RoPE;
                                          the identity for the others)
  logits_bias(q_XTHD, S, offset)          -> bias_XHTS, added to q.k / sqrt(D) (adds_bias)
  value_term(weights_XHTS, offset)        -> out_XTHD, added to weights @ v (adds_value: Shaw)
  tile_terms()                            -> (kernel.TileTerms or None, params): the same bias and
                                             value term for the block-sparse kernel's tiles
`X` is any leading shape ((B,) on the dense path); the tile terms take the kernel's (batch x heads)
rows as X, with heads folded in (q_XTD).

The dense hooks are the reference; the kernel's tile terms are written for speed: values over a
tile's clipped relative positions are laid out by one gather (`spread`) whose gradient is
`gather_by_relative` (a T x 2clip gather and two masked row sums), never a T x S scatter. T5 clips
at max_distance, beyond which distances share a bucket; Shaw at its own clip. They are tested
against the dense hooks.

The schemes' options (`PositionChoice`, `RopeParams`, `T5Params`, `ShawParams`) are declared at
the end, with `check_position`, which validates them once when a config's options are resolved.
"""

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from research.attention.kernel import TileTerms
from research.errors import UserError, check_choice, check_positive


def relative_positions(q_len: int, kv_len: int, offset: int | Array = 0) -> Array:
    """rel_TS = key position - query position for a tile whose keys start `offset` after queries."""
    return jnp.arange(kv_len)[None, :] - jnp.arange(q_len)[:, None] + offset


def t5_bucket(rel: Array, *, num_buckets: int, max_distance: int, bidirectional: bool) -> Array:
    """T5's bucket of relative position `rel` (key minus query), as in mesh_tensorflow.

    Bidirectional: keys after the query use the upper half of the buckets. Within a half (or all
    buckets, when not bidirectional) the first half are exact distances; the rest widen
    logarithmically up to max_distance, beyond which distances share the last bucket.
    """
    n = -rel
    bucket = jnp.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (n < 0).astype(rel.dtype) * num_buckets
        n = jnp.abs(n)
    else:
        n = jnp.maximum(n, 0)
    max_exact = num_buckets // 2
    log_ratio = jnp.log(n.astype(jnp.float32) / max_exact + np.finfo(np.float32).eps) / math.log(
        max_distance / max_exact
    )
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(rel.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(n < max_exact, n, large)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Press et al.'s head slopes: 2^(-8/n) geometric for a power of two n; otherwise those of the
    nearest lower power of two followed by every other slope of the next power."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    lower = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two(lower) + power_of_two(2 * lower)[0::2][: num_heads - lower]
    return np.asarray(slopes, np.float32)


def shaw_index(rel: Array, clip: int) -> Array:
    """Shaw et al.'s embedding index clip(j - i, -k, k) + k, in [0, 2k]."""
    return jnp.clip(rel, -clip, clip) + clip


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def spread(v_XTC: Array, offset, q_len: int, kv_len: int, clip: int) -> Array:
    """out_XTS = v_XTC[x, t, clip(s - t + offset, -clip, clip) + clip]: per-row values over the
    2 clip + 1 clipped relative positions laid out on a (q_len, kv_len) tile; v may have T = 1,
    shared by every row. One gather; its transpose is `gather_by_relative`, not a T x S scatter."""
    index_TS = jnp.clip(relative_positions(q_len, kv_len, offset), -clip, clip) + clip
    if v_XTC.shape[1] == 1:
        return v_XTC[:, 0][:, index_TS]
    index = jnp.broadcast_to(index_TS, v_XTC.shape[:1] + index_TS.shape)
    return jnp.take_along_axis(v_XTC, index, axis=-1)


def _spread_fwd(v_XTC, offset, q_len, kv_len, clip):
    return spread(v_XTC, offset, q_len, kv_len, clip), (offset, v_XTC.shape[1])


def _spread_bwd(q_len, kv_len, clip, residuals, out_XTS):
    offset, rows = residuals
    grad = gather_by_relative(out_XTS, offset, clip)
    return (grad.sum(1, keepdims=True) if rows == 1 else grad), None


def gather_by_relative(w_XTS: Array, offset, clip: int) -> Array:
    """out_XTC = sum over s of w_XTS[x, t, s] with clip(s - t + offset, -clip, clip) + clip = c:
    the weight of each clipped relative position per row (the transpose of `spread`). The 2 clip
    - 1 inner positions are one key each (a gather of T x (2 clip - 1)); the two ends are masked
    sums along the row."""
    _, q_len, kv_len = w_XTS.shape
    rel_TS = relative_positions(q_len, kv_len, offset)
    low = jnp.sum(jnp.where(rel_TS <= -clip, w_XTS, 0.0), -1, keepdims=True)
    high = jnp.sum(jnp.where(rel_TS >= clip, w_XTS, 0.0), -1, keepdims=True)
    key_TJ = jnp.arange(q_len)[:, None] + jnp.arange(1 - clip, clip)[None, :] - offset
    inside_TJ = (key_TJ >= 0) & (key_TJ < kv_len)
    index = jnp.broadcast_to(jnp.clip(key_TJ, 0, kv_len - 1), w_XTS.shape[:1] + key_TJ.shape)
    inner = jnp.where(inside_TJ, jnp.take_along_axis(w_XTS, index, axis=-1), 0.0)
    return jnp.concatenate([low, inner, high], axis=-1)


spread.defvjp(_spread_fwd, _spread_bwd)


class Position(nnx.Module):
    """No position information (position="none"); the base the schemes override.

    `adds_bias` and `adds_value` say which terms a scheme adds to attention: every path (dense,
    the kernel's tiles, the choice of implementation) asks them, and calls `logits_bias` /
    `value_term` only where they are True.
    """

    #: Whether the scheme adds a bias to the logits (`logits_bias`; the tiles' `bias`).
    adds_bias: ClassVar[bool] = False
    #: Whether the scheme adds a value term to weights @ v (`value_term`; the tiles' `value`).
    adds_value: ClassVar[bool] = False

    def rotate(self, q_BTHD: Array, k_BSHD: Array) -> tuple[Array, Array]:
        return q_BTHD, k_BSHD

    def logits_bias(self, q_XTHD: Array, kv_len: int, offset: int | Array) -> Array:
        raise NotImplementedError(f"{type(self).__name__} adds no logit bias")

    def value_term(self, weights_XHTS: Array, offset: int | Array) -> Array:
        raise NotImplementedError(f"{type(self).__name__} adds no value term")

    def tile_terms(self) -> tuple[TileTerms | None, tuple]:
        return None, ()


class RoPE(Position):
    """Rotary embeddings (Su et al. 2021): feature pairs (i, i + D/2) rotate by angle
    position * base^(-2i/D), so q.k depends only on the position difference."""

    def __init__(self, head_dim: int, base: float):
        if head_dim % 2:
            raise ValueError(f"RoPE rotates feature pairs: head_dim={head_dim} must be even")
        self.head_dim = head_dim
        self.base = base

    def apply(self, x_BTHD: Array, positions_T: Array) -> Array:
        half = self.head_dim // 2
        inv_freq = self.base ** (-jnp.arange(half, dtype=jnp.float32) / half)
        angle_T1F = (positions_T.astype(jnp.float32)[:, None] * inv_freq)[:, None, :]
        cos, sin = jnp.cos(angle_T1F), jnp.sin(angle_T1F)
        x1, x2 = x_BTHD[..., :half].astype(jnp.float32), x_BTHD[..., half:].astype(jnp.float32)
        rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        return rotated.astype(x_BTHD.dtype)

    def rotate(self, q_BTHD, k_BSHD):
        return (
            self.apply(q_BTHD, jnp.arange(q_BTHD.shape[1])),
            self.apply(k_BSHD, jnp.arange(k_BSHD.shape[1])),
        )


class ALiBi(Position):
    """Linear biases (Press et al. 2022): -slope_h * |j - i|. With a causal mask this is the paper's
    form (it adds slope * j, which differs by a per-row constant); without, the symmetric form."""

    adds_bias = True

    def __init__(self, num_heads: int):
        self.num_heads = num_heads

    def logits_bias(self, q_XTHD, kv_len, offset):
        rel_TS = relative_positions(q_XTHD.shape[-3], kv_len, offset)
        return -jnp.asarray(alibi_slopes(self.num_heads))[:, None, None] * jnp.abs(rel_TS).astype(
            jnp.float32
        )

    def tile_terms(self):
        return ALiBiTile(self.num_heads), ()


class T5Bias(Position):
    """T5's learned per-head scalar bias for each bucket of relative position (Raffel et al.)."""

    adds_bias = True

    def __init__(
        self, num_heads: int, *, num_buckets: int, max_distance: int, bidirectional: bool, rngs
    ):
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embedding_NH = nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (num_buckets, num_heads))
        )

    def logits_bias(self, q_XTHD, kv_len, offset):
        rel_TS = relative_positions(q_XTHD.shape[-3], kv_len, offset)
        bucket_TS = t5_bucket(
            rel_TS,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
            bidirectional=self.bidirectional,
        )
        return jnp.moveaxis(self.embedding_NH[...][bucket_TS], -1, 0).astype(jnp.float32)

    def tile_terms(self):
        terms = T5Tile(
            self.embedding_NH.shape[1], self.num_buckets, self.max_distance, self.bidirectional
        )
        return terms, self.embedding_NH[...]


class Shaw(Position):
    """Shaw et al. 2018: learned embeddings a^K, a^V (shared by heads) of clip(j - i, -k, k), added
    to the keys and values: e_ij = q_i.(k_j + a^K_ij) / sqrt(D), z_i = sum_j w_ij (v_j + a^V_ij).

    Neither term builds a T x S x D tensor: the key term gathers q.a^K (X,H,T,2k+1) by index, the
    value term sums the weights per index from a running sum along S, then mixes a^V.
    """

    adds_bias = True
    adds_value = True

    def __init__(self, head_dim: int, *, clip: int, rngs):
        self.clip = clip
        init = nnx.initializers.normal(0.02)
        self.key_RD = nnx.Param(init(rngs.params(), (2 * clip + 1, head_dim)))
        self.value_RD = nnx.Param(init(rngs.params(), (2 * clip + 1, head_dim)))

    def logits_bias(self, q_XTHD, kv_len, offset):
        scale = q_XTHD.shape[-1] ** -0.5
        qa_XHTR = jnp.einsum(
            "...thd,rd->...htr",
            q_XTHD * scale,
            self.key_RD[...],
            preferred_element_type=jnp.float32,
        )
        index_TS = shaw_index(relative_positions(q_XTHD.shape[-3], kv_len, offset), self.clip)
        index_XHTS = jnp.broadcast_to(index_TS, qa_XHTR.shape[:-1] + (kv_len,))
        return jnp.take_along_axis(qa_XHTR, index_XHTS, axis=-1)

    def value_term(self, weights_XHTS, offset):
        q_len, kv_len = weights_XHTS.shape[-2:]
        k = self.clip
        # Bucket r holds rel = r - k, i.e. key s = t + r - k - offset; buckets 0 and 2k also hold
        # everything beyond. Each bucket is a contiguous run of s, so a prefix sum gives its total.
        prefix = jnp.cumsum(weights_XHTS.astype(jnp.float32), axis=-1)
        prefix = jnp.concatenate([jnp.zeros_like(prefix[..., :1]), prefix], axis=-1)
        r = jnp.arange(2 * k + 1)
        s_TR = jnp.arange(q_len)[:, None] + r[None, :] - k - offset
        lo_TR = jnp.clip(jnp.where(r == 0, 0, s_TR), 0, kv_len)
        hi_TR = jnp.clip(jnp.where(r == 2 * k, kv_len - 1, s_TR) + 1, 0, kv_len)
        shape = weights_XHTS.shape[:-1] + (2 * k + 1,)
        take = lambda i_TR: jnp.take_along_axis(prefix, jnp.broadcast_to(i_TR, shape), axis=-1)
        buckets_XHTR = take(hi_TR) - take(lo_TR)
        out = jnp.einsum("...htr,rd->...thd", buckets_XHTR, self.value_RD[...])
        return out.astype(weights_XHTS.dtype)

    def tile_terms(self):
        return ShawTile(self.clip), (self.key_RD[...], self.value_RD[...])


#: Each scheme's class by its `position` name.
SCHEMES: dict[str, type[Position]] = {
    "none": Position,
    "rope": RoPE,
    "alibi": ALiBi,
    "t5": T5Bias,
    "shaw": Shaw,
}
POSITIONS = tuple(SCHEMES)


@dataclasses.dataclass(frozen=True)
class ALiBiTile(TileTerms):
    """ALiBi's bias on a tile."""

    num_heads: int
    scheme = ALiBi

    def bias(self, params, q_XTD, offset, rows_X, kv_len):
        slopes_X = jnp.asarray(alibi_slopes(self.num_heads))[rows_X % self.num_heads]
        rel_TS = relative_positions(q_XTD.shape[1], kv_len, offset)
        return -slopes_X[:, None, None] * jnp.abs(rel_TS).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class T5Tile(TileTerms):
    """T5's bias on a tile: distances of max_distance or more share their side's last bucket, so
    the table is looked up for the clipped relative positions -max_distance..max_distance only."""

    num_heads: int
    num_buckets: int
    max_distance: int
    bidirectional: bool
    scheme = T5Bias

    def bias(self, embedding_NH, q_XTD, offset, rows_X, kv_len):
        clip = self.max_distance
        bucket_C = t5_bucket(
            jnp.arange(-clip, clip + 1),
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
            bidirectional=self.bidirectional,
        )
        bias_XC = embedding_NH.astype(jnp.float32)[bucket_C][:, rows_X % self.num_heads].T
        return spread(bias_XC[:, None, :], offset, q_XTD.shape[1], kv_len, clip)


@dataclasses.dataclass(frozen=True)
class ShawTile(TileTerms):
    """Shaw's key term q.a^K(rel) and value term sum_s w a^V(rel) on a tile: `spread` lays the
    (T, 2k + 1) products q.a^K out on the tile, `gather_by_relative` sums the weights of each clip
    bucket; each is the other's gradient."""

    clip: int
    scheme = Shaw

    def bias(self, params, q_XTD, offset, rows_X, kv_len):
        key_RD, _ = params
        qa_XTR = jnp.einsum(
            "xtd,rd->xtr", q_XTD, key_RD.astype(q_XTD.dtype), preferred_element_type=jnp.float32
        )
        return spread(qa_XTR, offset, q_XTD.shape[1], kv_len, self.clip)

    def value(self, params, weights_XTS, offset):
        _, value_RD = params
        buckets_XTR = gather_by_relative(weights_XTS.astype(jnp.float32), offset, self.clip)
        return jnp.einsum("xtr,rd->xtd", buckets_XTR, value_RD.astype(jnp.float32))


# The position scheme's options: the fields config.model.attention_options.<variant>.<option> of
# the softmax variants' Options (full.py), each scheme's parameters declared once here.


@dataclasses.dataclass(frozen=True)
class PositionChoice:
    """position: the scheme, one of POSITIONS (an option of full, local and block_local; each
    preset fixes it)."""

    position: str = "none"


@dataclasses.dataclass(frozen=True)
class RopeParams:
    """RoPE's parameter: rope_base, the base of its rotation frequencies (> 1)."""

    rope_base: float = 10_000.0


@dataclasses.dataclass(frozen=True)
class T5Params:
    """T5's parameters: t5_num_buckets buckets of relative position, exact up to a quarter of them
    (half, when not bidirectional) and logarithmic up to t5_max_distance; t5_bidirectional gives
    keys after the query their own half of the buckets."""

    t5_num_buckets: int = 32
    t5_max_distance: int = 128
    t5_bidirectional: bool = True


@dataclasses.dataclass(frozen=True)
class ShawParams:
    """Shaw's parameter: shaw_clip, the relative distance k beyond which embeddings are shared."""

    shaw_clip: int = 16


def check_position(options, field: str, head_dim: int | None = None) -> None:
    """One-line UserErrors naming `field.<option>` for a bad scheme or a bad parameter of the
    scheme `options.position` names (the only parameters it reads); `head_dim`, when known, is
    checked against what the scheme needs (RoPE: even)."""
    position = options.position
    check_choice(f"{field}.position", position, POSITIONS)
    if position == "rope":
        base = options.rope_base
        if not (isinstance(base, int | float) and base > 1):
            raise UserError(f"{field}.rope_base={base!r} is not valid; it must be > 1")
        if head_dim is not None and head_dim % 2:
            raise UserError(
                f"{field}.position=rope needs an even head dimension (qkv_dim / num_heads), "
                f"got {head_dim}"
            )
    if position == "t5":
        _check_t5(options, field)
    if position == "shaw":
        check_positive(f"{field}.shaw_clip", options.shaw_clip)


def _check_t5(options: T5Params, field: str) -> None:
    check_positive(f"{field}.t5_num_buckets", options.t5_num_buckets)
    minimum = 4 if options.t5_bidirectional else 2
    buckets = options.t5_num_buckets
    if buckets < minimum:
        raise UserError(f"{field}.t5_num_buckets={buckets} is not valid; it must be >= {minimum}")
    if options.t5_bidirectional and buckets % 2:
        raise UserError(
            f"{field}.t5_num_buckets={buckets} is not valid; with t5_bidirectional=True it "
            "must be even (half the buckets for keys before the query, half for keys after)"
        )
    exact = buckets // (4 if options.t5_bidirectional else 2)
    distance = options.t5_max_distance
    if not (isinstance(distance, int) and not isinstance(distance, bool) and distance > exact):
        raise UserError(
            f"{field}.t5_max_distance={distance!r} is not valid; it must be an integer "
            f"> {exact} (the largest exactly bucketed distance)"
        )


def make_position(options, *, num_heads: int, head_dim: int, rngs: nnx.Rngs) -> Position:
    """Builds the scheme `options.position` names with its parameters from `options` (resolved
    and checked by `research.attention.resolve_options`)."""
    name = options.position
    if name == "rope":
        return RoPE(head_dim, float(options.rope_base))
    if name == "alibi":
        return ALiBi(num_heads)
    if name == "t5":
        return T5Bias(
            num_heads,
            num_buckets=options.t5_num_buckets,
            max_distance=options.t5_max_distance,
            bidirectional=bool(options.t5_bidirectional),
            rngs=rngs,
        )
    if name == "shaw":
        return Shaw(head_dim, clip=options.shaw_clip, rngs=rngs)
    return Position()
