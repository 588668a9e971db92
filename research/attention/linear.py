"""Linear attention: softmax(q.k) replaced by a kernel phi(q).phi(k), so keys can be summed first.

  out_i = phi(q_i) . sum_j phi(k_j) v_j^T  /  phi(q_i) . sum_j phi(k_j)

over valid keys j (and j <= i when causal). Non-causal: two sums over the sequence, O(N M D).
Causal: a scan over chunks of `chunk_size` carries the (M, D) state, each chunk adding its own
masked (chunk x chunk) quadratic term, so no N x M x D prefix tensor is built.

Variants: Katharopoulos et al. 2020 (phi = elu + 1, `linear`) and Performer FAVOR+ (Choromanski et
al. 2021, positive orthogonal random features, `performer`). There are no attention weights, so
`dropout_rate` has nothing to act on here.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from research.attention.base import SelfAttention
from research.attention.full import pad_to
from research.errors import UserError, check_choice, check_positive

REDRAW = ("never", "step")


def _divide(num: Array, den: Array) -> Array:
    """num / den, and 0 (with zero gradient) where den is 0: a query with no valid key."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def linear_attention(
    phi_q_BTHM: Array,
    phi_k_BSHM: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    *,
    causal: bool,
    chunk_size: int,
) -> Array:
    """The kernelised attention above for non-negative features; returns out_BTHD (float32 sums)."""
    phi_q = phi_q_BTHM.astype(jnp.float32)
    phi_k = phi_k_BSHM.astype(jnp.float32)
    v = v_BSHD.astype(jnp.float32)
    if key_mask_BS is not None:
        phi_k = phi_k * key_mask_BS[:, :, None, None].astype(jnp.float32)
    if not causal:
        kv_BHMD = jnp.einsum("bshm,bshd->bhmd", phi_k, v)
        num_BTHD = jnp.einsum("bthm,bhmd->bthd", phi_q, kv_BHMD)
        den_BTH = jnp.einsum("bthm,bhm->bth", phi_q, phi_k.sum(1))
        return _divide(num_BTHD, den_BTH[..., None]).astype(v_BSHD.dtype)

    batch, length, heads, _ = phi_q.shape
    c = chunk_size
    n = -(-length // c)
    chunks = lambda x: jnp.moveaxis(pad_to(x, n * c).reshape(batch, n, c, *x.shape[2:]), 1, 0)
    tril_TS = jnp.tril(jnp.ones((c, c), bool))

    def step(state, xs):
        kv_BHMD, z_BHM = state
        q_BCHM, k_BCHM, v_BCHD = xs
        scores_BHTS = jnp.where(tril_TS, jnp.einsum("bthm,bshm->bhts", q_BCHM, k_BCHM), 0.0)
        num = jnp.einsum("bhts,bshd->bthd", scores_BHTS, v_BCHD)
        num = num + jnp.einsum("bthm,bhmd->bthd", q_BCHM, kv_BHMD)
        den = scores_BHTS.sum(-1) + jnp.einsum("bthm,bhm->bht", q_BCHM, z_BHM)
        out = _divide(num, jnp.moveaxis(den, 1, 2)[..., None])
        kv_BHMD = kv_BHMD + jnp.einsum("bshm,bshd->bhmd", k_BCHM, v_BCHD)
        return (kv_BHMD, z_BHM + k_BCHM.sum(1)), out

    init = (
        jnp.zeros((batch, heads, phi_q.shape[-1], v.shape[-1]), jnp.float32),
        jnp.zeros((batch, heads, phi_q.shape[-1]), jnp.float32),
    )
    _, out_NBCHD = jax.lax.scan(step, init, (chunks(phi_q), chunks(phi_k), chunks(v)))
    out_BTHD = jnp.moveaxis(out_NBCHD, 0, 1).reshape(batch, n * c, heads, -1)[:, :length]
    return out_BTHD.astype(v_BSHD.dtype)


def elu_features(x: Array) -> Array:
    """Katharopoulos et al.'s phi(x) = elu(x) + 1 > 0, per head: x_BTHD -> phi_BTHD."""
    return jax.nn.elu(x.astype(jnp.float32)) + 1.0


class LinearAttention(SelfAttention):
    """Linear Transformer (Katharopoulos et al. 2020), phi = elu + 1.

    Options: chunk_size, the scan chunk of the causal form (memory O(N chunk + N/chunk D^2)).
    """

    name = "linear"

    def __init__(self, *, chunk_size: int = 64, **kwargs):
        super().__init__(**kwargs)
        check_positive(self.option_field("chunk_size"), chunk_size)
        self.chunk_size = chunk_size

    def features(self, q_BTHD: Array, k_BSHD: Array, key_mask_BS: Array | None):
        """(phi_q_BTHM, phi_k_BSHM), the feature maps the oracle tests rebuild attention from."""
        return elu_features(q_BTHD), elu_features(k_BSHD)

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        phi_q, phi_k = self.features(q_BTHD, k_BSHD, key_mask_BS)
        return linear_attention(
            phi_q, phi_k, v_BSHD, key_mask_BS, causal=self.causal, chunk_size=self.chunk_size
        )


def random_features(key: jax.Array, num_features: int, dim: int, *, orthogonal: bool) -> Array:
    """w_MD: rows ~ N(0, I_D); with `orthogonal`, rows within each block of D are made orthogonal
    (QR of a Gaussian block) and rescaled to chi-distributed norms, keeping each row's marginal
    distribution (so the estimator stays unbiased) while lowering its variance."""
    gauss_key, norm_key = jax.random.split(key)
    if not orthogonal:
        return jax.random.normal(gauss_key, (num_features, dim))
    num_blocks = -(-num_features // dim)
    blocks = jax.random.normal(gauss_key, (num_blocks, dim, dim))
    q_blocks, r_blocks = jnp.linalg.qr(blocks)
    # Sign-fix so each block is Haar-distributed (LAPACK's Q alone is not, which biases the kernel).
    q_blocks = q_blocks * jnp.sign(jnp.diagonal(r_blocks, axis1=-2, axis2=-1))[:, None, :]
    rows = jnp.moveaxis(q_blocks, -1, -2).reshape(num_blocks * dim, dim)[:num_features]
    norms = jnp.linalg.norm(jax.random.normal(norm_key, (num_features, dim)), axis=-1)
    return rows * norms[:, None]


def favor_features(
    x_BTHD: Array,
    w_MD: Array,
    *,
    is_query: bool,
    key_mask_BT: Array | None = None,
    causal: bool = False,
    eps: float = 0.0,
    stabilize: bool = True,
) -> Array:
    """FAVOR+ positive features phi(x) = exp(w.x - |x|^2/2 - c) / sqrt(M) + eps, x = in / D^(1/4),
    so that E[phi(q).phi(k)] = exp(q.k / sqrt(D)) exp(-c_q - c_k) when eps = 0.

    The stabiliser c cancels between numerator and denominator: per query, its largest exponent;
    for keys one constant per (batch, head): the largest exponent over valid keys, or, when causal
    (where that would let later keys reach earlier outputs), the data-independent bound
    max_m |w_m|^2 / 2 >= w.x - |x|^2/2. `stabilize=False` gives the raw, unbiased estimator (c = 0).
    Returns phi_BTHM in float32.
    """
    dim = x_BTHD.shape[-1]
    x = x_BTHD.astype(jnp.float32) * dim**-0.25
    exponent = jnp.einsum("bthd,md->bthm", x, w_MD) - 0.5 * jnp.sum(x * x, -1, keepdims=True)
    if not stabilize:
        shift = 0.0
    elif is_query:
        shift = exponent.max(-1, keepdims=True)
    elif causal:
        shift = 0.5 * jnp.max(jnp.sum(w_MD * w_MD, -1))
    else:
        valid = exponent
        if key_mask_BT is not None:
            valid = jnp.where(key_mask_BT[:, :, None, None], exponent, -jnp.inf)
        shift = valid.max(axis=(1, 3), keepdims=True)
        shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    return jnp.exp(exponent - shift) / math.sqrt(w_MD.shape[0]) + eps


class RandomFeatures(nnx.Variable):
    """FAVOR+ projection w_MD: model state, not a trained parameter."""


class PerformerAttention(LinearAttention):
    """Performer FAVOR+ (Choromanski et al. 2021): softmax attention estimated without bias by
    positive (orthogonal) random features.

    Options: num_features (M); orthogonal; kernel_eps, added to every feature so no denominator
    vanishes; redraw: "never" keeps the features drawn from `rngs.params` at build time, "step"
    draws fresh ones on every training call from the call's `dropout` stream (the training loop
    folds the step into it) while evaluation uses the stored draw; chunk_size as for `linear`.
    """

    name = "performer"

    def __init__(
        self,
        *,
        num_features: int = 256,
        orthogonal: bool = True,
        kernel_eps: float = 1e-3,
        redraw: str = "never",
        chunk_size: int = 64,
        **kwargs,
    ):
        super().__init__(chunk_size=chunk_size, **kwargs)
        check_positive(self.option_field("num_features"), num_features)
        check_choice(self.option_field("redraw"), redraw, REDRAW)
        if not kernel_eps >= 0:
            raise UserError(
                f"{self.option_field('kernel_eps')}={kernel_eps!r} is not valid; it must be >= 0"
            )
        self.num_features = num_features
        self.orthogonal = bool(orthogonal)
        self.kernel_eps = float(kernel_eps)
        self.redraw = redraw
        self.projection = RandomFeatures(self.draw(kwargs["rngs"].params()))

    def draw(self, key: jax.Array) -> Array:
        """A fresh projection w_MD."""
        return random_features(key, self.num_features, self.head_dim, orthogonal=self.orthogonal)

    def features(self, q_BTHD, k_BSHD, key_mask_BS, w_MD: Array | None = None):
        w_MD = self.projection[...] if w_MD is None else w_MD
        kwargs = dict(causal=self.causal, eps=self.kernel_eps)
        return (
            favor_features(q_BTHD, w_MD, is_query=True, **kwargs),
            favor_features(k_BSHD, w_MD, is_query=False, key_mask_BT=key_mask_BS, **kwargs),
        )

    def __call__(self, x_BTE, key_mask_BT=None, *, deterministic=True, rngs=None):
        if self.redraw == "never" or deterministic:
            return super().__call__(x_BTE, key_mask_BT, deterministic=deterministic, rngs=rngs)
        if rngs is None:
            raise ValueError("performer with redraw='step' needs rngs with a dropout stream")
        q_BTHD, k_BTHD, v_BTHD = self.qkv(x_BTE)
        phi_q, phi_k = self.features(q_BTHD, k_BTHD, key_mask_BT, self.draw(rngs.dropout()))
        out_BTHD = linear_attention(
            phi_q, phi_k, v_BTHD, key_mask_BT, causal=self.causal, chunk_size=self.chunk_size
        )
        return self.out(out_BTHD)
