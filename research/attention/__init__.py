"""Registry of attention variants: name -> `SelfAttention` subclass.

A variant's options are the fields of its frozen dataclass `Options` (FullOptions, LocalOptions,
... with PositionOptions and KernelOptions shared by the softmax variants); their defaults become
the config fields `config.model.attention_options.<name>.<option>` (see `default_options`). Adding a
variant is one module plus one line in `ATTENTION`. docs/attention.md describes each variant, its
options and what composes with what.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from research.attention.base import SelfAttention
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
from research.errors import UserError, check_choice

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
    """The options variant `name` offers and their defaults (from its `Options` dataclass)."""
    cls = attention_class(name)
    defaults = dataclasses.asdict(cls.Options()) if cls.Options else {}
    return {option: defaults[option] for option in cls.offered_options()}


def resolve_options(name: str, options: Mapping[str, Any]):
    """Variant `name`'s `Options` with `options` set and checked; an unknown key or a bad value is
    a UserError naming the field."""
    cls = attention_class(name)
    known = default_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        valid = sorted(known) or "none"
        raise UserError(f"{cls.option_field()} has unknown option(s) {unknown}; valid: {valid}")
    if cls.Options is None:
        return None
    resolved = cls.Options(**{**known, **dict(options)})
    resolved.check(cls.option_field())
    return resolved


def make_attention(name: str, options: Mapping[str, Any], **base_kwargs) -> SelfAttention:
    """Builds variant `name` with its `options` and the shared base arguments."""
    return attention_class(name)(resolve_options(name, options), **base_kwargs)
