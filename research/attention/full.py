"""Softmax attention: full, the position presets, and the base every softmax variant shares.

A softmax variant is a `Band` (which query-key pairs may meet) plus a position scheme; `attend`
runs it on the implementation `dispatch.choose_implementation` picks (dense, the block-sparse
kernel, cuDNN, the Pallas GPU kernel or splash; `auto` by default) and `weights` draws the dense
weights it implies.
Full attention's band is everything (or the causal triangle); local.py narrows it.

The position presets (`rope`, `alibi`, `t5`, `shaw`) are full attention with `position` fixed:
their options (RopeOptions, AlibiOptions, T5Options, ShawOptions) are how it runs plus their own
scheme's parameters only.
"""

import dataclasses
from typing import ClassVar

from research.attention.base import SelfAttention
from research.attention.dense import positional_weights
from research.attention.dispatch import KernelOptions, UnusableImplementation, softmax_attention
from research.attention.relative import (
    PositionChoice,
    RopeParams,
    ShawParams,
    T5Params,
    check_position,
    make_position,
)
from research.errors import UserError


@dataclasses.dataclass(frozen=True)
class SoftmaxOptions(KernelOptions):
    """What every softmax variant's options have: how it runs (KernelOptions) and a position
    scheme, `position` (a field, or a class attribute where a preset fixes it), with that scheme's
    parameters."""

    def check(self, field: str, head_dim: int | None = None) -> None:
        super().check(field, head_dim)
        check_position(self, field, head_dim)


@dataclasses.dataclass(frozen=True)
class FullOptions(ShawParams, T5Params, RopeParams, PositionChoice, SoftmaxOptions):
    """Options of `full`: how it runs (KernelOptions: implementation, block_q, block_k), its
    position scheme (PositionChoice: position) and every scheme's parameters (RopeParams,
    T5Params, ShawParams), of which the chosen scheme reads its own. The config fields follow
    that order."""


@dataclasses.dataclass(frozen=True)
class RopeOptions(RopeParams, SoftmaxOptions):
    """Options of `rope`: implementation, block_q, block_k (KernelOptions) and rope_base."""

    position: ClassVar[str] = "rope"


@dataclasses.dataclass(frozen=True)
class AlibiOptions(SoftmaxOptions):
    """Options of `alibi`: implementation, block_q, block_k (KernelOptions); ALiBi has no
    parameters."""

    position: ClassVar[str] = "alibi"


@dataclasses.dataclass(frozen=True)
class T5Options(T5Params, SoftmaxOptions):
    """Options of `t5`: implementation, block_q, block_k (KernelOptions) and the t5_* buckets."""

    position: ClassVar[str] = "t5"


@dataclasses.dataclass(frozen=True)
class ShawOptions(ShawParams, SoftmaxOptions):
    """Options of `shaw`: implementation, block_q, block_k (KernelOptions) and shaw_clip."""

    position: ClassVar[str] = "shaw"


class SoftmaxAttention(SelfAttention):
    """Softmax attention over the pairs `band()` allows, with a position scheme.

    Subclasses set `Options` (a SoftmaxOptions, resolved and checked by
    `research.attention.resolve_options`) and narrow `band()` where they see less than full
    attention (SelfAttention.band: everything, or the causal triangle).
    """

    Options: ClassVar[type] = FullOptions

    def __init__(self, options=None, **kwargs):
        super().__init__(**kwargs)
        self.options = self.Options() if options is None else options
        self.position = make_position(
            self.options, num_heads=self.num_heads, head_dim=self.head_dim, rngs=kwargs["rngs"]
        )

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        """Raises UserError naming this variant's `implementation` option when it asks for a
        platform kernel that cannot serve the call (known only now: backend, dtype, lengths)."""
        q_BTHD, k_BSHD = self.position.rotate(q_BTHD, k_BSHD)
        try:
            return softmax_attention(
                q_BTHD,
                k_BSHD,
                v_BSHD,
                key_mask_BS,
                self.band(),
                options=self.options,
                position=self.position,
                dropout_rate=self.dropout_rate,
                dropout_key=dropout_key,
            )
        except UnusableImplementation as error:
            raise UserError(f"{self.option_field()}.{error}") from None

    def weights(self, q_BTHD, k_BSHD, key_mask_BS):
        """The dense softmax weights_BHTS, whichever implementation `attend` runs (all compute the
        same function); zero outside the band. With position `shaw` the output is weights @ v plus
        the relative value term sum_j w_ij a^V(j - i), so weights @ v alone is not the output."""
        q_BTHD, k_BSHD = self.position.rotate(q_BTHD, k_BSHD)
        mask = self.band().mask(key_mask_BS, q_BTHD.shape[1], k_BSHD.shape[1])
        return positional_weights(q_BTHD, k_BSHD, mask, self.position, 0)


class FullAttention(SoftmaxAttention):
    """Multi-head softmax attention (Vaswani et al. 2017): every query sees every key (earlier
    ones only, when causal). Options: FullOptions."""

    name = "full"
    Options = FullOptions


class RopeAttention(FullAttention):
    """Full attention with rotary position embeddings (position=rope). Options: RopeOptions."""

    name = "rope"
    Options = RopeOptions


class AlibiAttention(FullAttention):
    """Full attention with ALiBi's linear distance biases (position=alibi). Options:
    AlibiOptions."""

    name = "alibi"
    Options = AlibiOptions


class T5Attention(FullAttention):
    """Full attention with T5's bucketed relative bias (position=t5). Options: T5Options."""

    name = "t5"
    Options = T5Options


class ShawAttention(FullAttention):
    """Full attention with Shaw et al.'s relative key and value embeddings (position=shaw).
    Options: ShawOptions."""

    name = "shaw"
    Options = ShawOptions
