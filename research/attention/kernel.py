"""One block-sparse flash kernel for every softmax variant: masks as data, positions per tile.

`block_sparse_attention` computes softmax(q k^T / sqrt(D) + bias) v under a `Band` (causal,
sliding window, block-local) and key padding, in O(N) memory, visiting only the tiles the band
needs, as FlexAttention and splash attention do: for unbounded bands (full, causal) the aligned
(query block, key block) pairs with an allowed pair (`Band.key_blocks`); for bands of bounded reach
(windows, blocks) one key tile per query block, the band's span sliding with it (`Band.key_span`),
so time and memory per token stay flat with length. The forward pass keeps a blocked online
softmax and saves only the output and each row's log-sum-exp; the backward pass
(FlashAttention-2) recomputes each visited tile once.

Position schemes enter per tile through `TileTerms` (research/attention/relative.py builds them):
a logit bias from the tile's relative positions (ALiBi, T5, Shaw's key term; never an N x N array)
and a value term mixed by the tile's weights (Shaw's); their gradients come from `jax.vjp` of the
per-tile functions, so a scheme is written once, forward only. RoPE acts before the kernel.
Dropout on the weights regenerates each tile's keep-mask from the tile's positions (dropout.py:
a hash of seed, row, query and key), in the forward and the backward pass alike, so no T x S mask
is stored and the same weights drop as on the dense path.

Layout: (batch x heads) rows, X = `rows_per_step` of them per step: q_XTD tiles are batched
matmuls with no transposes in the loops; 1/sqrt(D) is folded into q once. Tiles are visited as one
flat list of (query block, key start) in a scan: by query block in the forward pass (the running
softmax state resets when a new query block starts); in the backward pass by key block for aligned
tiles (dk, dv accumulate per key block, dq is added into place) and by query block for sliding
ones, whose key tiles overlap (dq accumulates, dk and dv are added into place).
"""

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from research.attention.dropout import dropout_seed, keep_bits, scale_kept
from research.attention.sparsity import Band
from research.intmath import ceil_div, round_up


class TileTerms:
    """A position scheme's contribution to each tile. Subclasses are frozen dataclasses (hashable:
    they are part of the compiled program) that name their `scheme`, the position class whose
    `adds_bias` / `adds_value` say which of these the kernel calls, and implement those:

      bias(params, q_XTD, offset, rows_X, kv_len) -> bias_XTS (f32), added to the logits; q is
          already scaled by 1/sqrt(D), offset = first key position - first query position of the
          tile, rows_X the (batch x heads) row indices of the step (row % num_heads = head);
      value(params, weights_XTS, offset) -> out_XTD (f32), added to weights @ v.

    `params` is the pytree of arrays the terms read (learned tables), differentiated through the
    kernel by `jax.vjp` of these functions.
    """

    #: The scheme (research.attention.relative.Position subclass) these terms belong to.
    scheme: ClassVar[type]

    def bias(self, params, q_XTD: Array, offset: Array, rows_X: Array, kv_len: int) -> Array:
        raise NotImplementedError

    def value(self, params, weights_XTS: Array, offset: Array) -> Array:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything static about one call: the tiles to visit and how.

    A tile is query block qi (rows qi * block_q ...) against `key_tile` keys starting at key
    `k_start` of the key sequence padded by `pad_left` masked keys in front. Bands of bounded reach
    (windows, blocks) slide one key tile of their span along the query blocks; unbounded ones (full,
    causal) visit the aligned key blocks the band needs.
    """

    band: Band
    block_q: int
    block_k: int
    rows: int  # batch x heads
    requested_rows_per_step: int  # 0 (or one that does not divide `rows`): rows_per_tile
    terms: TileTerms | None
    dropout_rate: float
    q_len: int
    kv_len: int

    @functools.cached_property
    def span(self) -> tuple[int, int] | None:
        span = self.band.key_span(self.block_q)
        return span if span is not None and span[1] < self.kv_len else None

    @property
    def key_tile(self) -> int:
        return self.block_k if self.span is None else self.span[1]

    @property
    def rows_per_step(self) -> int:
        requested = self.requested_rows_per_step
        if requested > 0 and self.rows % requested == 0:
            return requested
        return rows_per_tile(self.rows, self.block_q, self.key_tile)

    @property
    def pad_left(self) -> int:
        return 0 if self.span is None else max(0, -self.span[0])

    @functools.cached_property
    def tiles(self) -> tuple[np.ndarray, np.ndarray]:
        """(query block, key start in the padded keys) of each tile, by query block."""
        if self.span is None:
            needed = self.band.key_blocks(self.q_len, self.kv_len, self.block_q, self.block_k)
            qi, ki = np.nonzero(needed)
            return qi.astype(np.int32), (ki * self.block_k).astype(np.int32)
        qi = np.arange(ceil_div(self.q_len, self.block_q), dtype=np.int32)
        return qi, (qi * self.block_q + self.span[0] + self.pad_left).astype(np.int32)

    @property
    def padded_kv_len(self) -> int:
        """Keys after padding: every tile's keys lie inside."""
        _, k_start = self.tiles
        return max(self.pad_left + self.kv_len, int(k_start.max()) + self.key_tile)


def _firsts(major: np.ndarray) -> np.ndarray:
    """True where a run of equal values in `major` starts."""
    return np.concatenate([[True], major[1:] != major[:-1]])


def _tile_mask(plan: _Plan, qi, k_start, mask_XS):
    """mask_XTS (or _TS) of a tile: the band and key padding; None when nothing masks."""
    q_pos = qi * plan.block_q + jnp.arange(plan.block_q)[:, None]
    k_pos = k_start - plan.pad_left + jnp.arange(plan.key_tile)[None, :]
    mask = None
    if plan.band != Band():
        mask = plan.band.allows(q_pos, k_pos, jnp)
    if mask_XS is not None:
        keys = jax.lax.dynamic_slice_in_dim(mask_XS, k_start, plan.key_tile, 1)
        mask = keys[:, None, :] if mask is None else mask & keys[:, None, :]
    return mask


def _keep_mask(plan: _Plan, seed, rows_X, qi, k_start):
    """The tile's dropout keep-mask_XTS (dropout.py's bits at the tile's positions, so the same
    weights drop as on every other path), or None without dropout."""
    if seed is None or plan.dropout_rate <= 0.0:
        return None
    q_pos = qi * plan.block_q + jnp.arange(plan.block_q)[:, None]
    k_pos = k_start - plan.pad_left + jnp.arange(plan.key_tile)[None, :]
    return keep_bits(seed, rows_X[:, None, None], q_pos, k_pos, plan.dropout_rate)


def _slice(x, start, size, axis=1):
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis)


def _put(x, update, start, axis=1):
    return jax.lax.dynamic_update_slice_in_dim(x, update.astype(x.dtype), start, axis)


class _Tile:
    """One tile's inputs, sliced from a group's rows: q, k, v, the mask and the tile's offset."""

    def __init__(self, plan, q_XTD, k_XSD, v_XSD, mask_XS, qi, k_start):
        bq, bk = plan.block_q, plan.key_tile
        self.q_start = qi * bq
        self.q, self.k, self.v = (
            _slice(q_XTD, self.q_start, bq),
            _slice(k_XSD, k_start, bk),
            _slice(v_XSD, k_start, bk),
        )
        self.offset = k_start - plan.pad_left - self.q_start
        self.mask = _tile_mask(plan, qi, k_start, mask_XS)
        # Whether any of the step's rows has a real key in the tile (None: no key padding). A
        # tile of padding alone adds nothing to any row, so both passes skip its work.
        self.has_real_key = None if mask_XS is None else _slice(mask_XS, k_start, bk).any()

    def visit(self, work, skipped, operand):
        """work(operand), or skipped(operand) when the tile holds padding alone."""
        if self.has_real_key is None:
            return work(operand)
        return jax.lax.cond(self.has_real_key, work, skipped, operand)


def _scores(plan: _Plan, params, tile: _Tile, rows_X):
    """(logits_XTS, bias pullback or None): q k^T plus the position bias, -inf where masked; the
    same scores in the forward and the backward pass."""
    logits = jnp.einsum("xtd,xsd->xts", tile.q, tile.k, preferred_element_type=jnp.float32)
    pullback = None
    terms = plan.terms
    if terms is not None and terms.scheme.adds_bias:

        def bias_fn(params, q):
            return terms.bias(params, q, tile.offset, rows_X, plan.key_tile)

        bias, pullback = jax.vjp(bias_fn, params, tile.q)
        logits = logits + bias
    if tile.mask is not None:
        logits = jnp.where(tile.mask, logits, -jnp.inf)
    return logits, pullback


def _group_forward(plan: _Plan, params, seed, q_XTD, k_XSD, v_XSD, mask_XS, rows_X):
    """out_XTD (v's dtype) and lse_XT (+inf for rows that see no key) of one group of rows."""
    terms = plan.terms
    x, dim_v = q_XTD.shape[0], v_XSD.shape[-1]
    qi_P, k_start_P = plan.tiles

    def step(carry, tile_index):
        acc, norm, max_, out, lse = carry
        qi, k_start, first = tile_index
        acc = jnp.where(first, 0.0, acc)
        norm = jnp.where(first, 0.0, norm)
        max_ = jnp.where(first, -jnp.inf, max_)
        tile = _Tile(plan, q_XTD, k_XSD, v_XSD, mask_XS, qi, k_start)

        def attend(softmax_state):
            acc, norm, max_ = softmax_state
            logits, _ = _scores(plan, params, tile, rows_X)
            new_max = jnp.maximum(max_, logits.max(-1))
            # A row with no allowed key so far keeps max -inf; exp(-inf - 0) = 0 empties its tile.
            safe_max = jnp.where(new_max == -jnp.inf, 0.0, new_max)
            p = jnp.exp(logits - safe_max[..., None])
            correction = jnp.exp(max_ - safe_max)
            norm = norm * correction + p.sum(-1)
            keep = _keep_mask(plan, seed, rows_X, qi, k_start)
            if keep is not None:
                p = scale_kept(p, keep, plan.dropout_rate)
            update = jnp.einsum(
                "xts,xsd->xtd", p.astype(tile.v.dtype), tile.v, preferred_element_type=jnp.float32
            )
            if terms is not None and terms.scheme.adds_value:
                update = update + terms.value(params, p, tile.offset)
            return acc * correction[..., None] + update, norm, new_max

        acc, norm, new_max = tile.visit(attend, lambda state: state, (acc, norm, max_))
        # The tile's rows are final once their last key tile is in; writing every step is cheap
        # (block_q x D against a block_q x key_tile x D matmul) and needs no branch.
        valid = norm > 0
        safe_norm = jnp.where(valid, norm, 1.0)
        out = _put(out, jnp.where(valid[..., None], acc / safe_norm[..., None], 0.0), tile.q_start)
        lse = _put(lse, jnp.where(valid, new_max + jnp.log(safe_norm), jnp.inf), tile.q_start)
        return (acc, norm, new_max, out, lse), None

    bq = plan.block_q
    init = (
        jnp.zeros((x, bq, dim_v), jnp.float32),
        jnp.zeros((x, bq), jnp.float32),
        jnp.full((x, bq), -jnp.inf, jnp.float32),
        jnp.zeros((x, q_XTD.shape[1], dim_v), v_XSD.dtype),
        jnp.full((x, q_XTD.shape[1]), jnp.inf, jnp.float32),
    )
    tiles = (jnp.asarray(qi_P), jnp.asarray(k_start_P), jnp.asarray(_firsts(qi_P)))
    (_, _, _, out, lse), _ = jax.lax.scan(step, init, tiles)
    return out, lse


def _group_backward(plan: _Plan, params, seed, inputs, out_XTD, lse_XT, do_XTD):
    """(dq, dk, dv, dparams) of one group of rows. Aligned key blocks are visited by key block, dk
    and dv accumulating per block while dq is added into place; a sliding band's key tiles
    overlap, so its tiles go by query block, dq accumulating and dk, dv added into place.

    dk and dv are computed and accumulated transposed, (x, D, S), and turned once at the end: a
    tile's p^T do and ds^T q contract the tile's long query axis, which XLA's CPU dot runs at
    half its rate with the (T, S) operand transposed, and at full rate as do^T p and q^T ds (a
    512 x 1024 tile of one row: its backward 4.9 -> 2.9 ms; full attention at 4K, forward +
    backward, 5.6 -> 3.9 s)."""
    q_XTD, k_XSD, v_XSD, mask_XS, rows_X = inputs
    bq, bk = plan.block_q, plan.key_tile
    terms = plan.terms
    by_key = plan.span is None
    delta_XT = jnp.einsum("xtd,xtd->xt", do_XTD, out_XTD, preferred_element_type=jnp.float32)
    qi_P, k_start_P = plan.tiles
    if by_key:
        order = np.lexsort((qi_P, k_start_P))
        qi_P, k_start_P = qi_P[order], k_start_P[order]
    f32 = dict(preferred_element_type=jnp.float32)

    def tile_grads(tile, qi, k_start, dparams):
        """(dq, dk, dv) of one tile and the running dparams."""
        q, k, v, offset = tile.q, tile.k, tile.v, tile.offset
        do = _slice(do_XTD, tile.q_start, bq)
        logits, bias_pullback = _scores(plan, params, tile, rows_X)
        # lse is +inf on rows with no allowed key, so their p is 0 and nothing flows back.
        p = jnp.exp(logits - _slice(lse_XT, tile.q_start, bq)[..., None])
        keep = _keep_mask(plan, seed, rows_X, qi, k_start)
        p_kept = p if keep is None else scale_kept(p, keep, plan.dropout_rate)
        dv_DS = jnp.einsum("xtd,xts->xds", do, p_kept.astype(do.dtype), **f32)
        dp = jnp.einsum("xtd,xsd->xts", do, v, **f32)
        if terms is not None and terms.scheme.adds_value:
            value_fn = lambda prm, w: terms.value(prm, w, offset)  # noqa: E731
            _, value_pullback = jax.vjp(value_fn, params, p_kept)
            dparams_value, dp_value = value_pullback(do.astype(jnp.float32))
            dp = dp + dp_value
            dparams = jax.tree.map(jnp.add, dparams, dparams_value)
        if keep is not None:
            dp = scale_kept(dp, keep, plan.dropout_rate)
        ds = p * (dp - _slice(delta_XT, tile.q_start, bq)[..., None])
        dk_DS = jnp.einsum("xtd,xts->xds", q, ds.astype(q.dtype), **f32)
        dq = jnp.einsum("xts,xsd->xtd", ds.astype(k.dtype), k, **f32)
        if bias_pullback is not None:
            dparams_bias, dq_bias = bias_pullback(ds)
            dq = dq + dq_bias
            dparams = jax.tree.map(jnp.add, dparams, dparams_bias)
        return dq, dk_DS, dv_DS, dparams

    def step(carry, tile_index):
        acc_a, acc_b, dq, dk_DS, dv_DS, dparams = carry
        qi, k_start, first = tile_index
        tile = _Tile(plan, q_XTD, k_XSD, v_XSD, mask_XS, qi, k_start)

        def nothing(dparams):  # a tile of padding alone: zero gradients
            zeros = lambda *shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
            return zeros(x, bq, dim), zeros(x, dim, bk), zeros(x, dim_v, bk), dparams

        work = lambda dparams: tile_grads(tile, qi, k_start, dparams)  # noqa: E731
        dq_tile, dk_tile, dv_tile, dparams = tile.visit(work, nothing, dparams)
        acc_a, acc_b = jnp.where(first, 0.0, acc_a), jnp.where(first, 0.0, acc_b)
        if by_key:  # acc = (dk, dv) of this key block, as (D, S)
            acc_a, acc_b = acc_a + dk_tile, acc_b + dv_tile
            dk_DS, dv_DS = _put(dk_DS, acc_a, k_start, 2), _put(dv_DS, acc_b, k_start, 2)
            dq = _put(dq, _slice(dq, tile.q_start, bq) + dq_tile, tile.q_start)
        else:  # acc = dq of this query block (acc_b unused)
            acc_a = acc_a + dq_tile
            dq = _put(dq, acc_a, tile.q_start)
            dk_DS = _put(dk_DS, _slice(dk_DS, k_start, bk, 2) + dk_tile, k_start, 2)
            dv_DS = _put(dv_DS, _slice(dv_DS, k_start, bk, 2) + dv_tile, k_start, 2)
        return (acc_a, acc_b, dq, dk_DS, dv_DS, dparams), None

    x, dim, dim_v, kv_len = q_XTD.shape[0], q_XTD.shape[-1], v_XSD.shape[-1], k_XSD.shape[1]
    init = (
        jnp.zeros((x, dim, bk) if by_key else (x, bq, dim), jnp.float32),
        jnp.zeros((x, dim_v, bk) if by_key else (x, 1, 1), jnp.float32),
        jnp.zeros(q_XTD.shape, jnp.float32),
        jnp.zeros((x, dim, kv_len), jnp.float32),
        jnp.zeros((x, dim_v, kv_len), jnp.float32),
        jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), params),
    )
    major = k_start_P if by_key else qi_P
    tiles = (jnp.asarray(qi_P), jnp.asarray(k_start_P), jnp.asarray(_firsts(major)))
    (_, _, dq, dk_DS, dv_DS, dparams), _ = jax.lax.scan(step, init, tiles)
    return dq, jnp.swapaxes(dk_DS, 1, 2), jnp.swapaxes(dv_DS, 1, 2), dparams


def _groups(x: Array | None, size: int) -> Array | None:
    """Splits the leading (batch x heads) axis into steps of `size` rows: x_GXY."""
    return None if x is None else x.reshape(-1, size, *x.shape[1:])


def _ungroups(x_GXY: Array) -> Array:
    return x_GXY.reshape(-1, *x_GXY.shape[2:])


def _map_groups(plan: _Plan, fn, *arrays):
    """lax.map of fn(*group slices) over groups of rows."""
    grouped = [_groups(a, plan.rows_per_step) for a in arrays]
    return jax.lax.map(lambda xs: fn(*xs), tuple(grouped))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kernel(plan, q_XTD, k_XSD, v_XSD, mask_XS, rows_X, params, seed):
    return _kernel_fwd(plan, q_XTD, k_XSD, v_XSD, mask_XS, rows_X, params, seed)[0]


def _kernel_fwd(plan, q_XTD, k_XSD, v_XSD, mask_XS, rows_X, params, seed):
    def group_forward(q, k, v, mask, rows):
        return _group_forward(plan, params, seed, q, k, v, mask, rows)

    out_GXTD, lse_GXT = _map_groups(plan, group_forward, q_XTD, k_XSD, v_XSD, mask_XS, rows_X)
    out_XTD, lse_XT = _ungroups(out_GXTD), _ungroups(lse_GXT)
    residuals = (q_XTD, k_XSD, v_XSD, mask_XS, rows_X, params, seed, out_XTD, lse_XT)
    return out_XTD, residuals


def _kernel_bwd(plan, residuals, do_XTD):
    q_XTD, k_XSD, v_XSD, mask_XS, rows_X, params, seed, out_XTD, lse_XT = residuals

    def group_backward(q, k, v, mask, rows, out, lse, do):
        inputs = (q, k, v, mask, rows)
        return _group_backward(plan, params, seed, inputs, out, lse, do)

    arrays = (q_XTD, k_XSD, v_XSD, mask_XS, rows_X, out_XTD, lse_XT, do_XTD)
    dq, dk, dv, dparams = _map_groups(plan, group_backward, *arrays)
    dparams = jax.tree.map(lambda g, p: g.sum(0).astype(p.dtype), dparams, params)
    grads = (_ungroups(dq), _ungroups(dk), _ungroups(dv))
    grads = tuple(g.astype(x.dtype) for g, x in zip(grads, (q_XTD, k_XSD, v_XSD), strict=True))
    return (*grads, None, None, dparams, None)


_kernel.defvjp(_kernel_fwd, _kernel_bwd)


# Scores per step: small tiles take several (batch x heads) rows per step, up to the size of the
# fastest full-attention tile (512 x 1024 of one row), so the loop's per-step cost stays small.
SCORES_PER_STEP = 512 * 1024


def rows_per_tile(rows: int, block_q: int, block_k: int) -> int:
    """How many (batch x heads) rows one step takes: the largest divisor of `rows` whose tiles
    stay within SCORES_PER_STEP scores."""
    best = 1
    for count in range(1, rows + 1):
        if rows % count == 0 and count * block_q * block_k <= SCORES_PER_STEP:
            best = count
    return best


def block_sparse_attention(
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    band: Band | None = None,
    *,
    block_q: int = 512,
    block_k: int = 512,
    rows_per_step: int = 0,
    terms: TileTerms | None = None,
    params: Any = (),
    dropout_rate: float = 0.0,
    dropout_key: Array | None = None,
) -> Array:
    """softmax(q k^T / sqrt(D) + bias) v over the pairs `band` allows and valid keys; out_BTHD.

    Equals dense attention under the same mask (and `terms`' bias and value term), including an
    all-zero output and zero gradient for a query with no allowed key. Any lengths: blocks larger
    than a length shrink to it, padded keys are masked, padded queries dropped. Each step takes
    `rows_per_step` (batch x heads) rows at once (0: `rows_per_tile`).
    """
    band = Band() if band is None else band
    batch, q_len, heads, dim = q_BTHD.shape
    kv_len = k_BSHD.shape[1]
    block_q, block_k = min(block_q, q_len), min(block_k, kv_len)
    rows = batch * heads
    plan = _Plan(
        band=band,
        block_q=block_q,
        block_k=block_k,
        rows=rows,
        requested_rows_per_step=rows_per_step,
        terms=terms,
        dropout_rate=float(dropout_rate) if dropout_key is not None else 0.0,
        q_len=q_len,
        kv_len=kv_len,
    )
    t_pad = round_up(q_len, block_q)
    key_padding = (plan.pad_left, plan.padded_kv_len - plan.pad_left - kv_len)
    if key_mask_BS is None and key_padding != (0, 0):
        key_mask_BS = jnp.ones((batch, kv_len), bool)
    mask_XS = None
    if key_mask_BS is not None:
        mask_XS = jnp.repeat(jnp.pad(key_mask_BS.astype(bool), ((0, 0), key_padding)), heads, 0)
    scale = jnp.asarray(dim**-0.5, q_BTHD.dtype)

    def to_rows(x_BTHD, padding):
        x_BHTD = jnp.pad(jnp.swapaxes(x_BTHD, 1, 2), ((0, 0), (0, 0), padding, (0, 0)))
        return x_BHTD.reshape(rows, x_BHTD.shape[2], -1)

    out_XTD = _kernel(
        plan,
        to_rows(q_BTHD * scale, (0, t_pad - q_len)),
        to_rows(k_BSHD, key_padding),
        to_rows(v_BSHD, key_padding),
        mask_XS,
        jnp.arange(rows, dtype=jnp.int32),
        params,
        dropout_seed(dropout_key) if plan.dropout_rate > 0 else None,
    )
    out_XTD = out_XTD.reshape(batch, heads, t_pad, -1)[:, :, :q_len]
    return jnp.swapaxes(out_XTD, 1, 2)
