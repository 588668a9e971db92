"""Models built from the encoder: pooling and classification heads, and a per-position head.

Every model takes the batch dict produced by `research.tasks.pipeline` and returns logits_BC
(one class per example) or, for the per-position `Tagger`, logits_BTC (logits_BKC at the K
positions with a target, where the batch names them).
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from research.models.config import PER_POSITION_HEADS, ModelConfig
from research.models.encoder import Encoder


def encoder_has_cls(config: ModelConfig) -> bool:
    """Whether the task model's encoder prepends a CLS vector: every head that pools with "cls";
    never a per-position head, which reads every position."""
    return config.head not in PER_POSITION_HEADS and config.pool == "cls"


def pool(encoded_BLE: Array, mask_BL: Array, kind: str) -> Array:
    """pooled_BE: position 0 (the CLS vector), the mean over real tokens, the last real token
    (where a query sits in recall-style tasks: reading it there saves the model one hop), or the
    first real token (LRA's dual encoder, which prepends no CLS vector)."""
    if kind == "cls":
        return encoded_BLE[:, 0]
    if kind == "first":
        first_B = jnp.argmax(mask_BL, axis=1)  # the first True; 0 when a row has none
        return jnp.take_along_axis(encoded_BLE, first_B[:, None, None], axis=1)[:, 0]
    if kind == "last":
        last_B = jnp.maximum(mask_BL.sum(axis=1) - 1, 0)
        return jnp.take_along_axis(encoded_BLE, last_B[:, None, None], axis=1)[:, 0]
    weights_BL1 = mask_BL[..., None].astype(encoded_BLE.dtype)
    count_B1 = jnp.maximum(weights_BL1.sum(axis=1), 1.0)
    return (encoded_BLE * weights_BL1).sum(axis=1) / count_B1


class MlpClassifier(nnx.Module):
    """Linear -> ReLU -> Linear to `num_classes` logits (LRA's classifier head)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(in_features, hidden, rngs=rngs)
        self.logits = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x_BF: Array) -> Array:
        return self.logits(jax.nn.relu(self.hidden(x_BF)))


class Classifier(nnx.Module):
    """Encoder -> pooling -> MLP head; reads batch["tokens"] and batch["mask"]."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.pool_kind = config.pool
        self.encoder = Encoder(config, prepend_cls=encoder_has_cls(config), rngs=rngs)
        self.head = MlpClassifier(config.emb_dim, config.mlp_dim, config.num_classes, rngs=rngs)

    def __call__(
        self, batch: dict, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> Array:
        encoded_BLE, mask_BL = self.encoder(
            batch["tokens"], batch["mask"], deterministic=deterministic, rngs=rngs
        )
        return self.head(pool(encoded_BLE, mask_BL, self.pool_kind))


class PairClassifier(nnx.Module):
    """LRA's dual-encoder head (common_layers.classifier_head_dual): Linear to `hidden` -> ReLU ->
    Linear to hidden // 2 -> ReLU -> Linear to `num_classes` logits."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(in_features, hidden, rngs=rngs)
        self.hidden2 = nnx.Linear(hidden, hidden // 2, rngs=rngs)
        self.logits = nnx.Linear(hidden // 2, num_classes, rngs=rngs)

    def __call__(self, x_BF: Array) -> Array:
        return self.logits(jax.nn.relu(self.hidden2(jax.nn.relu(self.hidden(x_BF)))))


class TwoTower(nnx.Module):
    """One shared encoder over two documents, pooled to u_BE and v_BE, then a head on the pair.

    `config.two_tower_head`: "lra" is LRA's dual encoder, [u, v] -> PairClassifier; "interaction"
    is [u, v, u*v, u-v] -> MlpClassifier, which hands the head the products and differences it
    would otherwise have to learn. Reads batch["tokens1"], batch["mask1"], batch["tokens2"],
    batch["mask2"]; both towers are the same parameters, as in LRA.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.pool_kind = config.pool
        self.interaction = config.two_tower_head == "interaction"
        self.encoder = Encoder(config, prepend_cls=encoder_has_cls(config), rngs=rngs)
        if self.interaction:
            self.head = MlpClassifier(
                4 * config.emb_dim, config.mlp_dim, config.num_classes, rngs=rngs
            )
        else:
            self.head = PairClassifier(
                2 * config.emb_dim, config.mlp_dim, config.num_classes, rngs=rngs
            )

    def __call__(
        self, batch: dict, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> Array:
        # Both documents go through the encoder as one batch of 2B: one call, shared weights.
        tokens_NT = jnp.concatenate([batch["tokens1"], batch["tokens2"]], axis=0)
        mask_NT = jnp.concatenate([batch["mask1"], batch["mask2"]], axis=0)
        encoded_NLE, mask_NL = self.encoder(
            tokens_NT, mask_NT, deterministic=deterministic, rngs=rngs
        )
        u_BE, v_BE = jnp.split(pool(encoded_NLE, mask_NL, self.pool_kind), 2, axis=0)
        pair = [u_BE, v_BE, u_BE * v_BE, u_BE - v_BE] if self.interaction else [u_BE, v_BE]
        return self.head(jnp.concatenate(pair, axis=-1))


class Tagger(nnx.Module):
    """Encoder -> one linear layer per position: logits_BTC (no CLS, no pooling), or logits_BKC at
    batch["target_positions"] (int32 [B, K]) when the batch has it.

    For tasks with a target at some positions (associative recall, distance); the loss and the
    accuracy count only the positions whose label is >= 0. With `target_positions` (the
    pipeline's, for a task with at most K targets an example) the head runs at those K positions
    only: a vocabulary-sized head at every position would cost T / K times more for the same loss.

    With `config.tie_output` the layer is the token embedding itself, as in Zoology's language
    model (its lm_head is the word embedding): class c's logit is x . embedding[offset + c]
    (offset = `config.class_token_offset`), with no bias. Zoology's softmax runs over the whole
    vocabulary; here over the classes (MQAR's values), which are the only tokens ever a target.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.encoder = Encoder(config, prepend_cls=encoder_has_cls(config), rngs=rngs)
        if config.tie_output:
            self.logits = None
            self.classes = (config.class_token_offset, config.num_classes)
        else:
            self.logits = nnx.Linear(config.emb_dim, config.num_classes, rngs=rngs)

    def class_logits(self, x_NE: Array) -> Array:
        """logits_NC of encoded vectors x_NE (any leading axes)."""
        if self.logits is not None:
            return self.logits(x_NE)
        offset, count = self.classes
        table_VE = self.encoder.embedding.tokens.embedding[...]
        return jnp.einsum("...e,ce->...c", x_NE, table_VE[offset : offset + count])

    def __call__(
        self, batch: dict, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> Array:
        encoded_BTE, _ = self.encoder(
            batch["tokens"], batch["mask"], deterministic=deterministic, rngs=rngs
        )
        if "target_positions" in batch:
            positions_BK1 = batch["target_positions"][:, :, None]
            return self.class_logits(jnp.take_along_axis(encoded_BTE, positions_BK1, axis=1))
        return self.class_logits(encoded_BTE)


class TokenPredictor(nnx.Module):
    """The pretraining model (research/training/pretrain.py): the task model's encoder, built as
    the task model builds it (the same parameters and CLS vector), and a linear layer from every
    encoded position to the vocabulary: (tokens_NT, mask_NT) -> logits_NLV, L = T (+ 1 with CLS).

    The task model starts from this encoder; the vocabulary layer is not carried over.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.encoder = Encoder(config, prepend_cls=encoder_has_cls(config), rngs=rngs)
        self.vocabulary = nnx.Linear(config.emb_dim, config.vocab_size, rngs=rngs)

    def __call__(
        self,
        tokens_NT: Array,
        mask_NT: Array,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        encoded_NLE, _ = self.encoder(tokens_NT, mask_NT, deterministic=deterministic, rngs=rngs)
        return self.vocabulary(encoded_NLE)
