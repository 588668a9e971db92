"""Full softmax attention: every query scores every key.

Three exact implementations of the same function, or `auto`, chosen by the `implementation` option:
  dense    one (T, S) score matrix: O(T S) memory, fastest at short lengths;
  chunked  online softmax over (chunk x chunk) tiles: O(T chunk) memory, so lengths past dense
           memory train. Without a per-tile bias, value term or dropout (position none or rope)
           it runs `flash.flash_attention`, whose hand-written backward pass recomputes each tile
           once; otherwise the scan below (Rabe and Staats 2021), rematerialised by autodiff;
  cudnn    `jax.nn.dot_product_attention(implementation="cudnn")`: fused kernel, GPU, bf16/fp16;
  auto     cudnn where `choose_implementation` finds it usable, else dense up to one chunk, else
           chunked.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from research.attention.base import SelfAttention
from research.attention.flash import flash_attention
from research.attention.masks import attention_mask
from research.attention.relative import Position, make_position, relative_positions
from research.errors import UserError, check_choice, check_positive

IMPLEMENTATIONS = ("dense", "chunked", "cudnn", "auto")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
# Position schemes cudnn can run: the others need a per-tile bias or value term it cannot take.
CUDNN_POSITIONS = ("none", "rope")
# Position schemes the flash path runs (RoPE acts before tiling); the others take the scan.
FLASH_POSITIONS = ("none", "rope")


def _dropout(weights: Array, rate: float, key: jax.Array | None) -> Array:
    if key is None or rate <= 0.0:
        return weights
    keep = jax.random.bernoulli(key, 1.0 - rate, weights.shape)
    return jnp.where(keep, weights / (1.0 - rate), 0.0)


def attention_weights(
    q_XTHD: Array,
    k_XSHD: Array,
    mask_X1TS: Array | None = None,
    bias_XHTS: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> Array:
    """weights_XHTS = softmax(q k^T / sqrt(D) + bias) in float32 over any leading shape X.

    Masked keys get weight exactly 0; a query with every key masked gets an all-zero row (and zero
    gradient) instead of NaN or a uniform average over padding.
    """
    scale = q_XTHD.shape[-1] ** -0.5
    logits = jnp.einsum(
        "...thd,...shd->...hts", q_XTHD * scale, k_XSHD, preferred_element_type=jnp.float32
    )
    if bias_XHTS is not None:
        logits = logits + bias_XHTS
    if mask_X1TS is not None:
        logits = jnp.where(mask_X1TS, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    if mask_X1TS is not None:
        weights = jnp.where(mask_X1TS, weights, 0.0)
    return _dropout(weights, dropout_rate, dropout_key)


def dot_product_attention(
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    mask_B1TS: Array | None = None,
    bias_BHTS: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> Array:
    """softmax(q k^T / sqrt(D) + bias) v; returns out_BTHD (any leading shape in place of B)."""
    weights = attention_weights(
        q_BTHD, k_BSHD, mask_B1TS, bias_BHTS, dropout_rate=dropout_rate, dropout_key=dropout_key
    )
    return jnp.einsum("...hts,...shd->...thd", weights.astype(v_BSHD.dtype), v_BSHD)


def positional_weights(
    q_XTHD: Array,
    k_XSHD: Array,
    mask_X1TS: Array | None,
    position: Position,
    offset: int | Array,
    *,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> Array:
    """weights_XHTS of a tile at `offset` under a position scheme's logit bias (the scoring half
    of `positional_attention`, shared with the `weights` methods that draw attention maps)."""
    bias = position.logits_bias(q_XTHD, k_XSHD.shape[-3], offset)
    return attention_weights(
        q_XTHD, k_XSHD, mask_X1TS, bias, dropout_rate=dropout_rate, dropout_key=dropout_key
    )


def positional_attention(
    q_XTHD: Array,
    k_XSHD: Array,
    v_XSHD: Array,
    mask_X1TS: Array | None,
    position: Position,
    offset: int,
    *,
    dropout_rate: float,
    dropout_key: jax.Array | None,
) -> Array:
    """Dense attention with a position scheme's bias and value term for a tile at `offset`."""
    weights = positional_weights(
        q_XTHD,
        k_XSHD,
        mask_X1TS,
        position,
        offset,
        dropout_rate=dropout_rate,
        dropout_key=dropout_key,
    )
    out = jnp.einsum("...hts,...shd->...thd", weights.astype(v_XSHD.dtype), v_XSHD)
    extra = position.value_term(weights, offset)
    return out if extra is None else out + extra.astype(out.dtype)


def pad_to(x: Array, length: int, axis: int = 1) -> Array:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, length - x.shape[axis])
    return jnp.pad(x, pad)


def chunked_attention(
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    *,
    causal: bool,
    chunk_size: int,
    position: Position | None = None,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> Array:
    """Exact attention by online softmax over key chunks (Rabe and Staats 2021); returns out_BTHD.

    For each query chunk a scan over key chunks carries the running max m, normaliser l and
    unnormalised output; each step is rematerialised in the backward pass, so memory is
    O(B H chunk^2 + T H D) per query chunk instead of O(B H T S). Lengths need not divide the chunk;
    padded and fully masked chunks add nothing. The max is a stabiliser the result does not depend
    on, so it is held out of differentiation.
    """
    position = position or Position()
    batch, q_len, heads, dim = q_BTHD.shape
    kv_len = k_BSHD.shape[1]
    if key_mask_BS is None:
        key_mask_BS = jnp.ones((batch, kv_len), bool)
    c = chunk_size
    nq, nk = -(-q_len // c), -(-kv_len // c)
    chunks = lambda x, n: jnp.moveaxis(pad_to(x, n * c).reshape(batch, n, c, *x.shape[2:]), 1, 0)
    q_NBCHD = chunks(q_BTHD, nq)
    k_NBCHD, v_NBCHD = chunks(k_BSHD, nk), chunks(v_BSHD, nk)
    mask_NBC = chunks(key_mask_BS.astype(bool), nk)
    scale = dim**-0.5

    def query_chunk(args):
        qi, q_BCHD = args

        def key_step(carry, xs):
            acc_BCHD, norm_BHC, max_BHC = carry
            ki, k_BCHD, v_BCHD, mask_BC = xs
            offset = (ki - qi) * c
            logits = jnp.einsum(
                "bthd,bshd->bhts", q_BCHD * scale, k_BCHD, preferred_element_type=jnp.float32
            )
            bias = position.logits_bias(q_BCHD, c, offset)
            if bias is not None:
                logits = logits + bias
            mask_B1TS = mask_BC[:, None, None, :]
            if causal:
                mask_B1TS = mask_B1TS & (relative_positions(c, c, offset) <= 0)
            logits = jnp.where(mask_B1TS, logits, -jnp.inf)
            new_max = jax.lax.stop_gradient(jnp.maximum(max_BHC, logits.max(-1)))
            safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
            p_BHTS = jnp.where(mask_B1TS, jnp.exp(logits - safe_max[..., None]), 0.0)
            correction_BHC = jnp.exp(max_BHC - safe_max)
            norm_BHC = norm_BHC * correction_BHC + p_BHTS.sum(-1)
            if dropout_key is not None and dropout_rate > 0.0:
                key = jax.random.fold_in(jax.random.fold_in(dropout_key, qi), ki)
                p_BHTS = _dropout(p_BHTS, dropout_rate, key)
            update = jnp.einsum("bhts,bshd->bthd", p_BHTS, v_BCHD.astype(jnp.float32))
            extra = position.value_term(p_BHTS, offset)
            if extra is not None:
                update = update + extra
            acc_BCHD = acc_BCHD * jnp.moveaxis(correction_BHC, 1, 2)[..., None] + update
            return (acc_BCHD, norm_BHC, new_max), None

        init = (
            jnp.zeros((batch, c, heads, v_BSHD.shape[-1]), jnp.float32),
            jnp.zeros((batch, heads, c), jnp.float32),
            jnp.full((batch, heads, c), -jnp.inf, jnp.float32),
        )
        xs = (jnp.arange(nk), k_NBCHD, v_NBCHD, mask_NBC)
        (acc_BCHD, norm_BHC, _), _ = jax.lax.scan(jax.checkpoint(key_step), init, xs)
        norm_BC1H = jnp.moveaxis(norm_BHC, 1, 2)[..., None]
        return jnp.where(norm_BC1H > 0, acc_BCHD / jnp.where(norm_BC1H > 0, norm_BC1H, 1.0), 0.0)

    out_NBCHD = jax.lax.map(jax.checkpoint(query_chunk), (jnp.arange(nq), q_NBCHD))
    out_BTHD = jnp.moveaxis(out_NBCHD, 0, 1).reshape(batch, nq * c, heads, -1)[:, :q_len]
    return out_BTHD.astype(v_BSHD.dtype)


def fused_attention(
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    *,
    causal: bool,
    implementation: str = "cudnn",
) -> Array:
    """`jax.nn.dot_product_attention` with our mask convention; out_BTHD. A sequence with no valid
    key gets zeros, as the other paths give (the library would average its padding)."""
    mask = None
    if key_mask_BS is not None:
        shape = (q_BTHD.shape[0], 1, q_BTHD.shape[1], k_BSHD.shape[1])
        mask = jnp.broadcast_to(key_mask_BS.astype(bool)[:, None, None, :], shape)
    out_BTHD = jax.nn.dot_product_attention(
        q_BTHD, k_BSHD, v_BSHD, mask=mask, is_causal=causal, implementation=implementation
    )
    if key_mask_BS is None:
        return out_BTHD
    return jnp.where(key_mask_BS.any(-1)[:, None, None, None], out_BTHD, 0)


def cudnn_eligible(
    *, backend: str, dtype, head_dim: int, position: str, dropout: bool
) -> tuple[bool, str]:
    """Whether the cuDNN fused kernel can run this call, and if not, why (for error messages)."""
    if backend != "gpu":
        return False, f"it needs a GPU (backend is {backend})"
    if np.dtype(dtype) not in [np.dtype(d) for d in CUDNN_DTYPES]:
        return False, f"it needs bfloat16 or float16 inputs (got {np.dtype(dtype).name})"
    if head_dim > 128 or head_dim % 8:
        return False, f"it needs a head dimension <= 128 and divisible by 8 (got {head_dim})"
    if position not in CUDNN_POSITIONS:
        return False, f"it supports position in {CUDNN_POSITIONS} (got {position!r})"
    if dropout:
        return False, "it has no attention-weight dropout (set attention_dropout_rate=0)"
    return True, ""


def choose_implementation(
    requested: str,
    *,
    backend: str,
    dtype,
    head_dim: int,
    position: str,
    dropout: bool,
    length: int,
    chunk_size: int,
) -> str:
    """Resolves `auto` to cudnn (when eligible), else dense up to one chunk, else chunked."""
    if requested != "auto":
        return requested
    if cudnn_eligible(
        backend=backend, dtype=dtype, head_dim=head_dim, position=position, dropout=dropout
    )[0]:
        return "cudnn"
    return "dense" if length <= chunk_size else "chunked"


class FullAttention(SelfAttention):
    """Multi-head softmax attention (Vaswani et al. 2017) with an optional position scheme.

    Options: implementation (see module docstring), chunk_size for the chunked path, position in
    `relative.POSITIONS` and each scheme's parameters (rope_base; t5_num_buckets, t5_max_distance,
    t5_bidirectional; shaw_clip).
    """

    name = "full"

    def __init__(
        self,
        *,
        implementation: str = "dense",
        chunk_size: int = 256,
        position: str = "none",
        rope_base: float = 10_000.0,
        t5_num_buckets: int = 32,
        t5_max_distance: int = 128,
        t5_bidirectional: bool = True,
        shaw_clip: int = 16,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice(self.option_field("implementation"), implementation, IMPLEMENTATIONS)
        check_positive(self.option_field("chunk_size"), chunk_size)
        self.implementation = implementation
        self.chunk_size = chunk_size
        self.position_name = position
        self.position = make_position(
            position,
            field=self.option_field(),
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            rope_base=rope_base,
            t5_num_buckets=t5_num_buckets,
            t5_max_distance=t5_max_distance,
            t5_bidirectional=t5_bidirectional,
            shaw_clip=shaw_clip,
            rngs=kwargs["rngs"],
        )
        if implementation == "cudnn":
            ok, why = cudnn_eligible(
                backend=jax.default_backend(),
                dtype=jnp.bfloat16,
                head_dim=self.head_dim,
                position=position,
                dropout=self.dropout_rate > 0,
            )
            if not ok:
                raise UserError(
                    f"{self.option_field('implementation')}='cudnn' is not usable: {why}"
                )

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        q_BTHD, k_BSHD = self.position.rotate(q_BTHD, k_BSHD)
        implementation = choose_implementation(
            self.implementation,
            backend=jax.default_backend(),
            dtype=q_BTHD.dtype,
            head_dim=self.head_dim,
            position=self.position_name,
            dropout=dropout_key is not None and self.dropout_rate > 0,
            length=max(q_BTHD.shape[1], k_BSHD.shape[1]),
            chunk_size=self.chunk_size,
        )
        dropout = dropout_key is not None and self.dropout_rate > 0
        if implementation == "chunked" and self.position_name in FLASH_POSITIONS and not dropout:
            return flash_attention(
                q_BTHD,
                k_BSHD,
                v_BSHD,
                key_mask_BS,
                causal=self.causal,
                block_q=self.chunk_size,
                block_k=self.chunk_size,
            )
        if implementation == "chunked":
            return chunked_attention(
                q_BTHD,
                k_BSHD,
                v_BSHD,
                key_mask_BS,
                causal=self.causal,
                chunk_size=self.chunk_size,
                position=self.position,
                dropout_rate=self.dropout_rate,
                dropout_key=dropout_key,
            )
        if implementation == "cudnn":
            return self._cudnn(q_BTHD, k_BSHD, v_BSHD, key_mask_BS)
        mask_B1TS = attention_mask(
            key_mask_BS, causal=self.causal, q_len=q_BTHD.shape[1], kv_len=k_BSHD.shape[1]
        )
        return positional_attention(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            mask_B1TS,
            self.position,
            0,
            dropout_rate=self.dropout_rate,
            dropout_key=dropout_key,
        )

    def weights(self, q_BTHD, k_BSHD, key_mask_BS):
        """The dense softmax weights_BHTS, whichever implementation `attend` runs (dense, chunked
        and cudnn compute the same function). With position `shaw` the output is weights @ v plus
        the relative value term sum_j w_ij a^V(j - i), so weights @ v alone is not the output."""
        q_BTHD, k_BSHD = self.position.rotate(q_BTHD, k_BSHD)
        mask_B1TS = attention_mask(
            key_mask_BS, causal=self.causal, q_len=q_BTHD.shape[1], kv_len=k_BSHD.shape[1]
        )
        return positional_weights(q_BTHD, k_BSHD, mask_B1TS, self.position, 0)

    def _cudnn(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS):
        ok, why = cudnn_eligible(
            backend=jax.default_backend(),
            dtype=q_BTHD.dtype,
            head_dim=self.head_dim,
            position=self.position_name,
            dropout=False,
        )
        if not ok:
            raise UserError(f"{self.option_field('implementation')}='cudnn' is not usable: {why}")
        return fused_attention(q_BTHD, k_BSHD, v_BSHD, key_mask_BS, causal=self.causal)


def full_with_position(position: str) -> type[FullAttention]:
    """Full attention with `position` fixed, registered under the scheme's name (`attention=rope`).

    Its options are full attention's less `position` and the other schemes' parameters.
    """

    class Preset(FullAttention):
        name = position

        def __init__(self, **kwargs):
            super().__init__(position=position, **kwargs)

    others = tuple(f"{p}_" for p in ("rope", "t5", "shaw") if p != position)
    signature = inspect.signature(FullAttention.__init__)
    keep = [
        p
        for p in signature.parameters.values()
        if p.name != "position" and not p.name.startswith(others)
    ]
    Preset.__init__.__signature__ = signature.replace(parameters=keep)
    Preset.__name__ = Preset.__qualname__ = f"FullAttention_{position}"
    Preset.__doc__ = f"Full attention with position={position!r} (see FullAttention)."
    return Preset
