"""The interface every attention variant shares.

A variant subclasses `SelfAttention`, declares its options as a frozen dataclass `Options` (with a
`check(field, head_dim)` method raising one-line UserErrors naming `field.<option>`, called once
by `research.attention.resolve_options`; the variant's constructor takes the resolved instance),
and implements `attend(q, k, v, key_mask)` and `weights(q, k, key_mask)`, the dense attention
matrix it implies (for attention maps); the base class owns the query/key/value and output
projections, so every variant takes the same inputs (`x_BTE`, a key padding mask `key_mask_BT`
with True = real token, and optionally a query mask `query_mask_BT`) and returns the same shape.

`init` chooses how the projections start: "nnx" (flax's defaults: LeCun-normal kernels, zero
biases), "lra" (LRA's released Transformer, via flax's old `nn.SelfAttention(bias=False,
kernel_init=xavier_uniform())`: Xavier-uniform kernels, over the flattened (in, out) shape as old
flax's DenseGeneral drew them, and no biases) or "zoology" (Zoology's `_init_weights`, GPT-2's
scheme: kernels ~ N(0, 0.02), zero biases, and the output projection, which writes into the
residual stream, ~ N(0, 0.02 / sqrt(2 x num_layers))). The init matters for MQAR: under "nnx"
Zoology's Figure 2 model at (64, 4), width 64, stays at a quarter of the queries right (one of the
4 values in context) for 460,000 training sequences; under "zoology" it passes 90% within 80,000
(docs/tasks.md).
"""

from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from research.attention.sparsity import Band

INITS = ("nnx", "lra", "zoology")
#: Zoology's (and GPT-2's) `initializer_range`: the std of every kernel under init="zoology".
ZOOLOGY_INIT_STD = 0.02


def zoology_init(num_layers: int) -> tuple[dict, dict]:
    """Layer arguments under init="zoology" (Zoology's `_init_weights`): a layer reading the
    residual stream N(0, 0.02); one writing into it (attention's output projection, the MLP's
    second layer) N(0, 0.02 / sqrt(2 x num_layers)), as `rescale_prenorm_residual` draws out_proj
    and fc2; biases zero (flax's default)."""
    residual_std = ZOOLOGY_INIT_STD / (2 * num_layers) ** 0.5
    return (
        {"kernel_init": nnx.initializers.normal(ZOOLOGY_INIT_STD)},
        {"kernel_init": nnx.initializers.normal(residual_std)},
    )


def projection_init(init: str, *, num_layers: int = 1) -> tuple[dict, dict]:
    """The `nnx.LinearGeneral` arguments (q/k/v, output) of the projections under `init` (one of
    INITS); `num_layers` is the encoder's depth, which "zoology" scales the output projection by."""
    if init == "lra":
        made = {"use_bias": False, "kernel_init": nnx.initializers.xavier_uniform()}
        return made, made
    if init == "zoology":
        return zoology_init(num_layers)
    return {}, {}


def uniform_band_average(v_BSHD: Array, band: Band, q_len: int) -> Array:
    """avg_BTHD: each query's plain mean of the values its band allows (key padding ignored), in
    v's dtype: what a query row whose every logit carries LRA's -1e10 mask bias computes (in
    float32, -1e10 + a logit below 512 in size is -1e10 exactly, so its softmax is uniform).
    Prefix sums over each query's interval of keys (`Band.key_interval`): O(T D), any band."""
    lo_T, hi_T = band.key_interval(q_len, v_BSHD.shape[1])
    prefix = jnp.cumsum(v_BSHD.astype(jnp.float32), axis=1)
    prefix = jnp.pad(prefix, ((0, 0), (1, 0), (0, 0), (0, 0)))  # prefix[:, s] = sum of v[:, :s]
    total = prefix[:, hi_T + 1] - prefix[:, lo_T]
    count = jnp.asarray(hi_T - lo_T + 1, jnp.float32)[None, :, None, None]
    return (total / count).astype(v_BSHD.dtype)


def head_dim(qkv_features: int, num_heads: int) -> int:
    """D, the width of each head: qkv_features / num_heads, which must divide evenly."""
    if qkv_features % num_heads:
        raise ValueError(f"qkv_features={qkv_features} is not divisible by num_heads={num_heads}")
    return qkv_features // num_heads


class SelfAttention(nnx.Module):
    """Multi-head self-attention with pluggable scoring.

    Args:
      in_features: E, the width of the residual stream.
      num_heads: H.
      qkv_features: total query/key/value width over all heads (LRA's `qkv_dim`); D = qkv / H.
      causal: when True, position i sees only positions <= i.
      dropout_rate: dropout on attention weights, where the variant has weights to drop.
      init: how the projections start, one of INITS (module docstring).
      num_layers: the depth of the encoder this layer sits in (init="zoology" scales the output
        projection by it; the other inits ignore it).
    """

    #: The variant's registry name, used to name its config fields in error messages.
    name: ClassVar[str] = ""
    #: The variant's options: a frozen dataclass; its fields, in order, are the config fields
    #: config.model.attention_options.<name>.<field>.
    Options: ClassVar[type | None] = None

    @classmethod
    def option_field(cls, option: str = "") -> str:
        """The config path of one of this variant's options (or of all of them, without one)."""
        path = f"config.model.attention_options.{cls.name}"
        return f"{path}.{option}" if option else path

    def __init__(
        self,
        *,
        in_features: int,
        num_heads: int,
        qkv_features: int | None = None,
        causal: bool = False,
        dropout_rate: float = 0.0,
        init: str = "nnx",
        num_layers: int = 1,
        rngs: nnx.Rngs,
    ):
        qkv_features = qkv_features or in_features
        self.num_heads = num_heads
        self.head_dim = head_dim(qkv_features, num_heads)
        self.causal = causal
        self.dropout_rate = dropout_rate
        heads = (num_heads, self.head_dim)
        made, out_made = projection_init(init, num_layers=num_layers)
        self.query = nnx.LinearGeneral(in_features, heads, **made, rngs=rngs)
        self.key = nnx.LinearGeneral(in_features, heads, **made, rngs=rngs)
        self.value = nnx.LinearGeneral(in_features, heads, **made, rngs=rngs)
        self.out = nnx.LinearGeneral(heads, in_features, axis=(-2, -1), **out_made, rngs=rngs)

    def __call__(
        self,
        x_BTE: Array,
        key_mask_BT: Array | None = None,
        *,
        query_mask_BT: Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Returns y_BTE. `rngs` needs a `dropout` stream unless deterministic or rate is 0.

        `query_mask_BT` (None: every query is real) masks query rows too, making the mask LRA's
        outer product of query and key masks: a masked query's row is `mask_queries`'.
        """
        q_BTHD, k_BTHD, v_BTHD = self.qkv(x_BTE)
        dropout_key = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_key = rngs.dropout()
        out_BTHD = self.attend(q_BTHD, k_BTHD, v_BTHD, key_mask_BT, dropout_key=dropout_key)
        return self.out(self.mask_queries(out_BTHD, v_BTHD, query_mask_BT))

    def band(self) -> Band:
        """Which (query, key) pairs may meet, apart from key padding: everything (the causal
        triangle when causal); softmax variants narrow it."""
        return Band(causal=self.causal)

    def mask_queries(self, out_BTHD: Array, v_BTHD: Array, query_mask_BT: Array | None) -> Array:
        """out_BTHD with each masked query's row replaced by what LRA's outer-product mask makes
        of it: a row whose every logit gets the -1e10 bias attends uniformly to the keys its band
        allows, padding included (`uniform_band_average`; never NaN, and for an all-padding row
        what it is in LRA). Without attention-weight dropout on those rows, and for position
        `shaw` without its relative value term: the plain mean of the values."""
        if query_mask_BT is None:
            return out_BTHD
        uniform_BTHD = uniform_band_average(v_BTHD, self.band(), out_BTHD.shape[1])
        return jnp.where(query_mask_BT[:, :, None, None], out_BTHD, uniform_BTHD)

    def qkv(self, x_BTE: Array) -> tuple[Array, Array, Array]:
        """The per-head projections (q_BTHD, k_BTHD, v_BTHD)."""
        return self.query(x_BTE), self.key(x_BTE), self.value(x_BTE)

    def attend(
        self,
        q_BTHD: Array,
        k_BSHD: Array,
        v_BSHD: Array,
        key_mask_BS: Array | None,
        *,
        dropout_key: jax.Array | None,
    ) -> Array:
        """Mixes values by query-key scores into out_BTHD; padded keys must contribute nothing."""
        raise NotImplementedError

    def weights(self, q_BTHD: Array, k_BSHD: Array, key_mask_BS: Array | None) -> Array:
        """weights_BHTS, float32: how much query t takes from key s, at this variant's options,
        causality and key mask, without dropout. Rows sum to 1 over the keys a query may see (0 for
        a query that sees none); padded and out-of-reach keys get exactly 0. Where the output is
        a mix of the values, einsum("bhts,bshd->bthd", weights, v) == attend(q, k, v, key_mask).

        Dense (O(T S) memory) on purpose, also for variants whose `attend` never builds it: it is
        for inspecting a model (research/sweeps/attention_maps.py), not for training.
        """
        raise NotImplementedError
