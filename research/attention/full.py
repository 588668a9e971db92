"""Softmax attention: full, and the base every softmax variant shares.

A softmax variant is a `Band` (which query-key pairs may meet) plus a position scheme; `attend`
runs it on the implementation `dispatch.choose_implementation` picks (dense, the block-sparse
kernel, cuDNN or splash; `auto` by default) and `weights` draws the dense weights it implies.
Full attention's band is everything (or the causal triangle); local.py narrows it.

The position presets (`rope`, `alibi`, `t5`, `shaw`) are full attention with `position` fixed,
offering only their own scheme's options.
"""

import dataclasses
from typing import ClassVar

from research.attention.base import SelfAttention
from research.attention.dense import positional_weights
from research.attention.dispatch import KernelOptions, softmax_attention
from research.attention.relative import SCHEME_OPTIONS, PositionOptions, make_position
from research.attention.sparsity import Band


@dataclasses.dataclass(frozen=True)
class FullOptions(PositionOptions, KernelOptions):
    """Options of `full`: how it runs (KernelOptions) and its position scheme (PositionOptions)."""

    def check(self, field: str) -> None:
        KernelOptions.check(self, field)
        PositionOptions.check(self, field)


class SoftmaxAttention(SelfAttention):
    """Softmax attention over the pairs `band()` allows, with a position scheme.

    Subclasses set `Options` (a frozen dataclass deriving from KernelOptions and PositionOptions)
    and implement `band()`.
    """

    Options: ClassVar[type] = FullOptions

    def __init__(self, options=None, **kwargs):
        super().__init__(**kwargs)
        self.options = self.Options() if options is None else options
        self.options.check(self.option_field())
        self.position = make_position(
            self.options,
            field=self.option_field(),
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            rngs=kwargs["rngs"],
        )

    def band(self) -> Band:
        """Which (query, key) pairs may meet, apart from key padding."""
        raise NotImplementedError

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        q_BTHD, k_BSHD = self.position.rotate(q_BTHD, k_BSHD)
        return softmax_attention(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            key_mask_BS,
            self.band(),
            options=self.options,
            position=self.position,
            position_name=self.options.position,
            field=self.option_field(),
            dropout_rate=self.dropout_rate,
            dropout_key=dropout_key,
        )

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

    def band(self) -> Band:
        return Band(causal=self.causal)


def preset_options(position: str) -> tuple[str, ...]:
    """The options a preset of `position` offers: full's, less `position` and the other schemes'
    parameters."""
    others = {o for scheme, names in SCHEME_OPTIONS.items() if scheme != position for o in names}
    fields = [f.name for f in dataclasses.fields(FullOptions)]
    return tuple(f for f in fields if f != "position" and f not in others)


class _Preset(FullAttention):
    """Full attention with `position` fixed to the class name: its `Options` are FullOptions
    whose `position` defaults to the name, so a config's options are checked as the scheme's
    before anything is built."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.Options = dataclasses.make_dataclass(
            f"{cls.name.capitalize()}Options",
            [("position", str, dataclasses.field(default=cls.name))],
            bases=(FullOptions,),
            frozen=True,
        )

    @classmethod
    def offered_options(cls) -> tuple[str, ...]:
        return preset_options(cls.name)


class RopeAttention(_Preset):
    """Full attention with rotary position embeddings (position=rope)."""

    name = "rope"


class AlibiAttention(_Preset):
    """Full attention with ALiBi's linear distance biases (position=alibi)."""

    name = "alibi"


class T5Attention(_Preset):
    """Full attention with T5's bucketed relative bias (position=t5)."""

    name = "t5"


class ShawAttention(_Preset):
    """Full attention with Shaw et al.'s relative key and value embeddings (position=shaw)."""

    name = "shaw"
