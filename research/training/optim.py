"""The optimizer: `config.optimizer` typed and checked (`OptimizerConfig`), its learning-rate
schedules and AdamW. The task's training and pretraining (`config.pretrain.optimizer`) each build
one from their own fields."""

import dataclasses

import jax.numpy as jnp
import ml_collections
import optax

from research.errors import UserError, check_choice, check_positive

SCHEDULES = ("rsqrt", "cosine", "constant")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """`config.optimizer` (or `config.pretrain.optimizer`), typed and checked (`from_config`);
    configs/base.py says what each field means."""

    schedule: str
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    b1: float
    b2: float
    eps: float
    grad_clip_norm: float

    @classmethod
    def from_config(
        cls, optimizer: ml_collections.ConfigDict, field: str = "config.optimizer"
    ) -> "OptimizerConfig":
        """Checks `optimizer` (the ConfigDict at `field`); a bad value is a one-line UserError
        naming `<field>.<name>`."""
        check_choice(f"{field}.schedule", optimizer.schedule, SCHEDULES)
        check_positive(f"{field}.warmup_steps", optimizer.warmup_steps, allow_zero=True)
        if not optimizer.learning_rate > 0:
            raise UserError(f"{field}.learning_rate={optimizer.learning_rate!r} must be > 0")
        return cls(**{field.name: optimizer[field.name] for field in dataclasses.fields(cls)})


def learning_rate_schedule(optimizer: OptimizerConfig, num_steps: int) -> optax.Schedule:
    """Step -> rate; every schedule peaks at `optimizer.learning_rate` (at the end of warmup), so
    one rate means the same thing under each and a learning-rate ablation compares like with like.

    rsqrt: peak * min(1, s/w) * sqrt(w / max(s, w)), LRA's c * min(1, s/w) / sqrt(max(s, w)) with
    c = peak * sqrt(w) (LRA's `rsqrt_normalized_decay`); cosine: linear warmup, then cosine to 0 at
    `num_steps`; constant: linear warmup, then flat.
    """
    rate, warmup = optimizer.learning_rate, optimizer.warmup_steps
    if optimizer.schedule == "rsqrt":
        warmup = max(warmup, 1)

        def rsqrt(step):
            step = jnp.asarray(step, jnp.float32)
            decay = jnp.sqrt(warmup / jnp.maximum(step, warmup))
            return rate * jnp.minimum(1.0, step / warmup) * decay

        return rsqrt
    if optimizer.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, rate, warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1)
        )
    return optax.join_schedules(
        [optax.linear_schedule(0.0, rate, max(warmup, 1)), optax.constant_schedule(rate)],
        [warmup],
    )


def describe_schedule(optimizer: OptimizerConfig, num_steps: int) -> str:
    """One line on the peak rate and warmup, and the last rate when the run ends in warmup."""
    line = f"peak learning rate {optimizer.learning_rate:.2e} ({optimizer.schedule} schedule, "
    line += f"warmup {optimizer.warmup_steps} steps)"
    if num_steps < optimizer.warmup_steps:  # as in LRA's Retrieval (5,000 steps, warmup 8,000)
        last = float(learning_rate_schedule(optimizer, num_steps)(num_steps))
        line += f"; this run ends in warmup at {last:.2e}"
    return line


def create_optimizer(optimizer: OptimizerConfig, num_steps: int):
    """AdamW (decoupled weight decay) on the schedule, with optional global-norm clipping."""
    adamw = optax.adamw(
        learning_rate_schedule(optimizer, num_steps),
        b1=optimizer.b1,
        b2=optimizer.b2,
        eps=optimizer.eps,
        weight_decay=optimizer.weight_decay,
    )
    if optimizer.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(optimizer.grad_clip_norm), adamw)
    return adamw
