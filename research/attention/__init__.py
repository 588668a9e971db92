"""Registry of attention variants: name -> `SelfAttention` subclass.

A variant's options are the fields of its frozen dataclass `Options` (FullOptions, RopeOptions,
LocalOptions, LinearOptions, ...; the softmax variants' share KernelOptions and the position
schemes' parameter dataclasses in relative.py); their defaults become the config fields
`config.model.attention_options.<name>.<option>` (see `default_options`), and `resolve_options`
checks a config's values once, naming the field of a bad one. Adding a
variant is one module plus one line in `ATTENTION`. docs/attention.md describes each variant, its
options and what composes with what.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from research.attention.base import SelfAttention, head_dim
from research.attention.dense import dot_product_attention
from research.attention.full import (
    AlibiAttention,
    FullAttention,
    RopeAttention,
    ShawAttention,
    T5Attention,
)
from research.attention.linear import LinearAttention, PerformerAttention
from research.attention.local import BlockLocalAttention, LocalAttention
from research.errors import check_choice, check_known

__all__ = [
    "ATTENTION",
    "BlockLocalAttention",
    "FullAttention",
    "LinearAttention",
    "LocalAttention",
    "PerformerAttention",
    "SelfAttention",
    "attention_class",
    "default_options",
    "dot_product_attention",
    "make_attention",
    "resolve_options",
]

ATTENTION: dict[str, type[SelfAttention]] = {
    cls.name: cls
    for cls in (
        FullAttention,
        LocalAttention,
        BlockLocalAttention,
        LinearAttention,
        PerformerAttention,
        RopeAttention,
        AlibiAttention,
        T5Attention,
        ShawAttention,
    )
}


def attention_class(name: str) -> type[SelfAttention]:
    """Looks a variant up by name; an unknown name is a UserError listing the valid ones."""
    check_choice("config.model.attention", name, sorted(ATTENTION))
    return ATTENTION[name]


def default_options(name: str) -> dict[str, Any]:
    """The options variant `name` offers and their defaults: its `Options` fields, in order."""
    cls = attention_class(name)
    return dataclasses.asdict(cls.Options()) if cls.Options else {}


def resolve_options(name: str, options: Mapping[str, Any], *, head_dim: int | None = None):
    """Variant `name`'s `Options` with `options` set, checked once here: an unknown key or a bad
    value is a UserError naming config.model.attention_options.<name>.<option>. `head_dim` (D),
    when known, is checked against what the options need (position=rope: even)."""
    cls = attention_class(name)
    known = default_options(name)
    check_known(cls.option_field(), options, known, kind="option")
    if cls.Options is None:
        return None
    resolved = cls.Options(**{**known, **dict(options)})
    resolved.check(cls.option_field(), head_dim)
    return resolved


def make_attention(
    name: str,
    options: Mapping[str, Any],
    *,
    in_features: int,
    num_heads: int,
    qkv_features: int | None = None,
    **base_kwargs,
) -> SelfAttention:
    """Builds variant `name` with its `options` (resolved and checked against the head width) and
    the shared base arguments of `SelfAttention`."""
    dim = head_dim(qkv_features or in_features, num_heads)
    return attention_class(name)(
        resolve_options(name, options, head_dim=dim),
        in_features=in_features,
        num_heads=num_heads,
        qkv_features=qkv_features,
        **base_kwargs,
    )
