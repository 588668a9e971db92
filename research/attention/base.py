"""The interface every attention variant shares.

A variant subclasses `SelfAttention`, declares its options as a frozen dataclass `Options` (with a
`check(field, head_dim)` method raising one-line UserErrors naming `field.<option>`, called once
by `research.attention.resolve_options`; the variant's constructor takes the resolved instance),
and implements `attend(q, k, v, key_mask)` and `weights(q, k, key_mask)`, the dense attention
matrix it implies (for attention maps); the base class owns the query/key/value and output
projections, so every variant takes the same inputs (`x_BTE`, a key padding mask `key_mask_BT`
with True = real token) and returns the same shape.
"""

from typing import ClassVar

import jax
from flax import nnx
from jax import Array


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
        rngs: nnx.Rngs,
    ):
        qkv_features = qkv_features or in_features
        self.num_heads = num_heads
        self.head_dim = head_dim(qkv_features, num_heads)
        self.causal = causal
        self.dropout_rate = dropout_rate
        heads = (num_heads, self.head_dim)
        self.query = nnx.LinearGeneral(in_features, heads, rngs=rngs)
        self.key = nnx.LinearGeneral(in_features, heads, rngs=rngs)
        self.value = nnx.LinearGeneral(in_features, heads, rngs=rngs)
        self.out = nnx.LinearGeneral(heads, in_features, axis=(-2, -1), rngs=rngs)

    def __call__(
        self,
        x_BTE: Array,
        key_mask_BT: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Returns y_BTE. `rngs` needs a `dropout` stream unless deterministic or rate is 0."""
        q_BTHD, k_BTHD, v_BTHD = self.qkv(x_BTE)
        dropout_key = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_key = rngs.dropout()
        out_BTHD = self.attend(q_BTHD, k_BTHD, v_BTHD, key_mask_BT, dropout_key=dropout_key)
        return self.out(out_BTHD)

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
