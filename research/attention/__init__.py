"""Registry of attention variants: name -> `SelfAttention` subclass.

A variant's own options are the keyword arguments its `__init__` adds to the base class's; their
defaults become the config fields `config.model.attention_options.<name>.<option>` (see
`default_options`). Adding a variant is one module plus one line in `ATTENTION`. docs/attention.md
describes each variant, its options and what composes with what.
"""

import inspect
from collections.abc import Mapping
from typing import Any

from research.attention.base import SelfAttention
from research.attention.full import FullAttention, dot_product_attention, full_with_position
from research.attention.linear import LinearAttention, PerformerAttention
from research.attention.local import BlockLocalAttention, LocalAttention
from research.attention.masks import attention_mask, causal_mask
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
    "attention_mask",
    "causal_mask",
    "default_options",
    "dot_product_attention",
    "make_attention",
    "resolve_options",
]

ATTENTION: dict[str, type[SelfAttention]] = {
    "full": FullAttention,
    "local": LocalAttention,
    "block_local": BlockLocalAttention,
    "linear": LinearAttention,
    "performer": PerformerAttention,
    "rope": full_with_position("rope"),
    "alibi": full_with_position("alibi"),
    "t5": full_with_position("t5"),
    "shaw": full_with_position("shaw"),
}

_BASE_ARGS = set(inspect.signature(SelfAttention.__init__).parameters)


def attention_class(name: str) -> type[SelfAttention]:
    """Looks a variant up by name; an unknown name is a UserError listing the valid ones."""
    check_choice("config.model.attention", name, sorted(ATTENTION))
    return ATTENTION[name]


def default_options(name: str) -> dict[str, Any]:
    """The variant-specific keyword arguments of `ATTENTION[name]` and their defaults."""
    params = inspect.signature(attention_class(name).__init__).parameters.values()
    return {
        p.name: p.default for p in params if p.name not in _BASE_ARGS and p.kind == p.KEYWORD_ONLY
    }


def resolve_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults of variant `name` updated by `options`; an unknown key is a UserError."""
    known = default_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(
            f"config.model.attention_options.{name} has unknown option(s) {unknown}; "
            f"valid: {sorted(known) or 'none'}"
        )
    return {**known, **dict(options)}


def make_attention(name: str, options: Mapping[str, Any], **base_kwargs) -> SelfAttention:
    """Builds variant `name` with its `options` and the shared base arguments."""
    return attention_class(name)(**resolve_options(name, options), **base_kwargs)
