"""Linear attention: softmax(q.k) replaced by a kernel phi(q).phi(k), so keys can be summed first.

  out_i = phi(q_i) . sum_j phi(k_j) v_j^T  /  phi(q_i) . sum_j phi(k_j)

over valid keys j (and j <= i when causal). Non-causal: two sums over the sequence, O(N M D).
Causal: a scan over chunks of `chunk_size` carries the (M, D) state, each chunk adding its own
masked (chunk x chunk) quadratic term, so no N x M x D prefix tensor is built; a sequence short
enough that the masked quadratic form costs fewer FLOPs (`one_chunk_or`: at most chunk_size + D
tokens when M = D, such as MQAR's 64 and 128) is one chunk, with no state (at N = 128, D = 128 on
one CPU core, forward and backward took half the time of two chunks of 64). Non-causal
Performer (`favor_attention`) also never stores its N x M features: M is several times D, and
storing them for the backward pass made its memory several times linear attention's.

Variants: Katharopoulos et al. 2020 (phi = elu + 1, `linear`) and Performer FAVOR+ (Choromanski et
al. 2021, positive orthogonal random features, `performer`). No weight matrix is formed, so
`dropout_rate` has nothing to act on here; `weights()` builds the one the output implies (the
normalised phi(q).phi(k)) only to draw attention maps.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from research.attention.base import SelfAttention
from research.attention.dense import pad_to
from research.attention.sparsity import Band
from research.errors import check_choice, check_positive
from research.intmath import ceil_div

REDRAW = ("never", "step")

# Floor on a positive denominator, so 1/den^2 in its gradient stays finite in float32. FAVOR+
# rows are scaled so their largest query and key features are 1/sqrt(M); their denominators
# measured >= 1e-6 for unit-variance q, k (D <= 128, M <= 4096, N = 256), so the floor acts only
# far outside the regime where the estimate means anything.
DEN_FLOOR = 1e-18


def _divide(num: Array, den: Array) -> Array:
    """num / max(den, DEN_FLOOR), and 0 (with zero gradient) where den is 0: no valid key."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, jnp.maximum(den, DEN_FLOOR), 1.0), 0.0)


def _finite_or_zero(x: Array) -> Array:
    """x with its infinities (a running maximum before the first valid key: -inf) set to 0."""
    return jnp.where(jnp.isfinite(x), x, 0.0)


def _chunks(x_BL: Array, chunk: int) -> Array:
    """x_BL... cut along axis 1 into chunks of `chunk` rows, the last padded with zeros:
    x_NBC... with N = ceil(L / chunk) leading."""
    batch, length = x_BL.shape[:2]
    n = ceil_div(length, chunk)
    return jnp.moveaxis(pad_to(x_BL, n * chunk).reshape(batch, n, chunk, *x_BL.shape[2:]), 1, 0)


def one_chunk_or(chunk_size: int, length: int, features: int, value_dim: int) -> int:
    """The causal form's chunk: the whole sequence when one chunk costs no more FLOPs than the
    scan, else `chunk_size`. Per query, one chunk scores `length` keys (length (M + D)); the scan
    scores its chunk's keys and reads and writes the (M, D) state (chunk_size (M + D) + 2 M D),
    so one chunk wins while length <= chunk_size + 2 M D / (M + D) (chunk_size + D when M = D).
    Its memory, length^2 per head, stays below (chunk_size + D)^2."""
    reach = 2 * features * value_dim // (features + value_dim)
    return length if length <= chunk_size + reach else chunk_size


def linear_attention(
    phi_q_BTHM: Array,
    phi_k_BSHM: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    *,
    causal: bool,
    chunk_size: int,
    key_log_scale_BSH: Array | None = None,
) -> Array:
    """The kernelised attention above for non-negative features; returns out_BTHD (float32 sums).

    Key j's feature is phi_k_j * exp(key_log_scale_j) (FAVOR+ keeps its exponent apart, as it
    would overflow). Each query row multiplies the keys it sees by exp(-their largest log scale),
    a constant per row that cancels in the ratio: the largest over all valid keys, or when causal
    over the valid keys j <= i (a running maximum, so later keys never reach earlier outputs).
    """
    phi_q = phi_q_BTHM.astype(jnp.float32)
    phi_k = phi_k_BSHM.astype(jnp.float32)
    v = v_BSHD.astype(jnp.float32)
    log_scale = jnp.zeros(phi_k.shape[:-1], jnp.float32)
    if key_log_scale_BSH is not None:
        log_scale = log_scale + key_log_scale_BSH.astype(jnp.float32)
    if key_mask_BS is not None:
        log_scale = jnp.where(key_mask_BS[:, :, None], log_scale, -jnp.inf)  # weight exp(-inf) = 0
    if not causal:
        top_B1H = jax.lax.stop_gradient(log_scale.max(1, keepdims=True))
        phi_k = phi_k * jnp.exp(log_scale - _finite_or_zero(top_B1H))[..., None]
        kv_BHMD = jnp.einsum("bshm,bshd->bhmd", phi_k, v)
        num_BTHD = jnp.einsum("bthm,bhmd->bthd", phi_q, kv_BHMD)
        den_BTH = jnp.einsum("bthm,bhm->bth", phi_q, phi_k.sum(1))
        return _divide(num_BTHD, den_BTH[..., None]).astype(v_BSHD.dtype)

    batch, length, heads, features = phi_q.shape
    c = one_chunk_or(chunk_size, length, features, v.shape[-1])
    n = ceil_div(length, c)
    log_scale = jnp.pad(log_scale, ((0, 0), (0, n * c - length), (0, 0)), constant_values=-jnp.inf)
    # Each row's shift: the running maximum of the log scales, -inf before the first valid key.
    top_BSH = jax.lax.cummax(jax.lax.stop_gradient(log_scale), axis=1)
    tril_TS = jnp.tril(jnp.ones((c, c), bool))

    def own_keys(q_BCHM, k_BCHM, v_BCHD, scale_BCH, finite_top_BCH):
        """A chunk's numerator and denominator from its own keys (s <= t): the masked quadratic
        form, each key weighted by exp(scale_s - top_t) <= 1 (0 if s is invalid)."""
        shift_BHTS = (
            jnp.moveaxis(scale_BCH, 1, 2)[:, :, None, :]
            - jnp.moveaxis(finite_top_BCH, 1, 2)[:, :, :, None]
        )
        scores_BHTS = jnp.exp(jnp.where(tril_TS, shift_BHTS, -jnp.inf))
        scores_BHTS = scores_BHTS * jnp.einsum("bthm,bshm->bhts", q_BCHM, k_BCHM)
        num = jnp.einsum("bhts,bshd->bthd", scores_BHTS, v_BCHD)
        den = jnp.moveaxis(scores_BHTS.sum(-1), 1, 2)[..., None]
        return num, den

    if n == 1:  # no earlier chunk, and no later one to carry a state to
        out_BTHD = _divide(*own_keys(phi_q, phi_k, v, log_scale, _finite_or_zero(top_BSH)))
        return out_BTHD.astype(v_BSHD.dtype)

    def step(state, xs):
        # kv and z sum the earlier chunks' keys times exp(log scale - top_BH), top_BH their maximum.
        kv_BHMD, z_BHM, top_BH = state
        q_BCHM, k_BCHM, v_BCHD, scale_BCH, top_BCH = xs
        finite_top_BCH = _finite_or_zero(top_BCH)
        num, den = own_keys(q_BCHM, k_BCHM, v_BCHD, scale_BCH, finite_top_BCH)
        carry_BCH1 = jnp.exp(top_BH[:, None] - finite_top_BCH)[..., None]  # <= 1, 0 if no key yet
        num = num + carry_BCH1 * jnp.einsum("bthm,bhmd->bthd", q_BCHM, kv_BHMD)
        den = den + carry_BCH1 * jnp.einsum("bthm,bhm->bth", q_BCHM, z_BHM)[..., None]
        out = _divide(num, den)
        decay_BH = jnp.exp(top_BH - finite_top_BCH[:, -1])
        k_BCHM = k_BCHM * jnp.exp(scale_BCH - finite_top_BCH[:, -1:])[..., None]
        kv_BHMD = kv_BHMD * decay_BH[..., None, None]
        kv_BHMD = kv_BHMD + jnp.einsum("bshm,bshd->bhmd", k_BCHM, v_BCHD)
        z_BHM = z_BHM * decay_BH[..., None] + k_BCHM.sum(1)
        return (kv_BHMD, z_BHM, top_BCH[:, -1]), out

    chunks = lambda x: _chunks(x, c)
    init = (
        jnp.zeros((batch, heads, features, v.shape[-1]), jnp.float32),
        jnp.zeros((batch, heads, features), jnp.float32),
        jnp.full((batch, heads), -jnp.inf, jnp.float32),
    )
    xs = (chunks(phi_q), chunks(phi_k), chunks(v), chunks(log_scale), chunks(top_BSH))
    _, out_NBCHD = jax.lax.scan(step, init, xs)
    out_BTHD = jnp.moveaxis(out_NBCHD, 0, 1).reshape(batch, n * c, heads, -1)[:, :length]
    return out_BTHD.astype(v_BSHD.dtype)


def linear_weights(
    phi_q_BTHM: Array,
    phi_k_BSHM: Array,
    key_mask_BS: Array | None,
    *,
    causal: bool,
    key_log_scale_BSH: Array | None = None,
) -> Array:
    """The weights linear attention implies, weights_BHTS (float32): phi(q_t).phi(k_s), key s
    scaled by exp(key_log_scale_s), normalised over the keys query t sees (valid, and s <= t when
    causal), 0 elsewhere and in a row with none: `linear_attention`'s output is weights @ v.

    Built as a dense (T, S) matrix for inspection; each row is shifted by its own largest key
    log scale, which cancels in the ratio as it does in `linear_attention`.
    """
    scores_BHTS = jnp.einsum(
        "bthm,bshm->bhts", phi_q_BTHM.astype(jnp.float32), phi_k_BSHM.astype(jnp.float32)
    )
    q_len, kv_len = scores_BHTS.shape[-2:]
    log_scale_BHTS = jnp.zeros(scores_BHTS.shape, jnp.float32)
    if key_log_scale_BSH is not None:
        log_scale = jnp.moveaxis(key_log_scale_BSH.astype(jnp.float32), 1, 2)[:, :, None, :]
        log_scale_BHTS = log_scale_BHTS + log_scale
    allowed = Band(causal=causal).mask(key_mask_BS, q_len, kv_len)
    if allowed is not None:
        log_scale_BHTS = jnp.where(allowed, log_scale_BHTS, -jnp.inf)  # weight exp(-inf) = 0
    top_BHT1 = jax.lax.stop_gradient(log_scale_BHTS.max(-1, keepdims=True))
    top_BHT1 = _finite_or_zero(top_BHT1)
    scores_BHTS = scores_BHTS * jnp.exp(log_scale_BHTS - top_BHT1)
    return _divide(scores_BHTS, scores_BHTS.sum(-1, keepdims=True))


def elu_features(x: Array) -> Array:
    """Katharopoulos et al.'s phi(x) = elu(x) + 1 > 0, per head: x_BTHD -> phi_BTHD."""
    return jax.nn.elu(x.astype(jnp.float32)) + 1.0


@dataclasses.dataclass(frozen=True)
class LinearOptions:
    """Options of `linear`: chunk_size, the scan chunk of the causal form (memory
    O(N chunk + N/chunk D^2)); a sequence of at most chunk_size + 2MD/(M + D) tokens is one chunk
    (`one_chunk_or`)."""

    chunk_size: int = 64

    def check(self, field: str, head_dim: int | None = None) -> None:
        check_positive(f"{field}.chunk_size", self.chunk_size)


@dataclasses.dataclass(frozen=True)
class PerformerOptions(LinearOptions):
    """Options of `performer`: num_features (M); orthogonal features; redraw ("never" keeps the
    features drawn from `rngs.params` at build time, "step" draws fresh ones on every training
    call from the call's `dropout` stream, the training loop folding the step into it, while
    evaluation uses the stored draw); chunk_size as for `linear`; feature_chunk, the rows whose
    features the non-causal form holds at once (`favor_attention`: memory O(feature_chunk M)
    instead of O(N M); 512 measured fastest of 256 to 2,048 at N = 4,096, M = 256, D = 64)."""

    num_features: int = 256
    orthogonal: bool = True
    redraw: str = "never"
    feature_chunk: int = 512

    def check(self, field: str, head_dim: int | None = None) -> None:
        super().check(field, head_dim)
        check_positive(f"{field}.num_features", self.num_features)
        check_positive(f"{field}.feature_chunk", self.feature_chunk)
        check_choice(f"{field}.redraw", self.redraw, REDRAW)


class LinearAttention(SelfAttention):
    """Linear Transformer (Katharopoulos et al. 2020), phi = elu + 1. Options: LinearOptions."""

    name = "linear"
    Options = LinearOptions

    def __init__(self, options=None, **kwargs):
        super().__init__(**kwargs)
        self.options = self.Options() if options is None else options
        self.chunk_size = self.options.chunk_size

    def features(self, q_BTHD: Array, k_BSHD: Array):
        """(phi_q_BTHM, phi_k_BSHM, key_log_scale_BSH or None): key j's feature is
        phi_k_j * exp(key_log_scale_j); the oracle tests rebuild attention from these."""
        return elu_features(q_BTHD), elu_features(k_BSHD), None

    def mix(self, features, v_BSHD: Array, key_mask_BS: Array | None) -> Array:
        """out_BTHD from the triple `features` returns."""
        phi_q, phi_k, key_log_scale = features
        return linear_attention(
            phi_q,
            phi_k,
            v_BSHD,
            key_mask_BS,
            causal=self.causal,
            chunk_size=self.chunk_size,
            key_log_scale_BSH=key_log_scale,
        )

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        return self.mix(self.features(q_BTHD, k_BSHD), v_BSHD, key_mask_BS)

    def weights(self, q_BTHD, k_BSHD, key_mask_BS):
        """The normalised phi(q).phi(k) weights_BHTS the output mixes values by, from the same
        features `attend` uses (for Performer, the stored random projection)."""
        phi_q, phi_k, key_log_scale = self.features(q_BTHD, k_BSHD)
        return linear_weights(
            phi_q, phi_k, key_mask_BS, causal=self.causal, key_log_scale_BSH=key_log_scale
        )


def random_features(key: jax.Array, num_features: int, dim: int, *, orthogonal: bool) -> Array:
    """w_MD: rows ~ N(0, I_D); with `orthogonal`, rows within each block of D are made orthogonal
    (QR of a Gaussian block) and rescaled to chi-distributed norms, keeping each row's marginal
    distribution (so the estimator stays unbiased) while lowering its variance."""
    gauss_key, norm_key = jax.random.split(key)
    if not orthogonal:
        return jax.random.normal(gauss_key, (num_features, dim))
    num_blocks = ceil_div(num_features, dim)
    blocks = jax.random.normal(gauss_key, (num_blocks, dim, dim))
    q_blocks, r_blocks = jnp.linalg.qr(blocks)
    # Sign-fix so each block is Haar-distributed (LAPACK's Q alone is not, which biases the kernel).
    q_blocks = q_blocks * jnp.sign(jnp.diagonal(r_blocks, axis1=-2, axis2=-1))[:, None, :]
    rows = jnp.moveaxis(q_blocks, -1, -2).reshape(num_blocks * dim, dim)[:num_features]
    norms = jnp.linalg.norm(jax.random.normal(norm_key, (num_features, dim)), axis=-1)
    return rows * norms[:, None]


def favor_exponent(x_BTHD: Array, w_MD: Array) -> Array:
    """exponent_BTHM = w.x - |x|^2/2 with x = in / D^(1/4) (float32): FAVOR+'s features are its
    exponential over sqrt(M)."""
    x = x_BTHD.astype(jnp.float32) * x_BTHD.shape[-1] ** -0.25
    return jnp.einsum("bthd,md->bthm", x, w_MD) - 0.5 * jnp.sum(x * x, -1, keepdims=True)


def favor_features(x_BTHD: Array, w_MD: Array) -> tuple[Array, Array]:
    """FAVOR+ positive features exp(w.x - |x|^2/2) / sqrt(M) with x = in / D^(1/4), for which
    E[phi(q).phi(k)] = exp(q.k / sqrt(D)) exactly, returned as (phi_BTHM, log_scale_BTH), float32:
    the features are phi * exp(log_scale), log_scale being each row's largest exponent (held out
    so nothing overflows, and without gradient: per-row constants cancel in attention)."""
    exponent = favor_exponent(x_BTHD, w_MD)
    log_scale = jax.lax.stop_gradient(exponent.max(-1))
    return jnp.exp(exponent - log_scale[..., None]) / math.sqrt(w_MD.shape[0]), log_scale


def favor_attention(
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    w_MD: Array,
    *,
    chunk_size: int,
) -> Array:
    """Non-causal FAVOR+ attention, out_BTHD: `linear_attention` of `favor_features`, computed
    `chunk_size` rows at a time and recomputed in the backward pass, so no (N, M) feature array
    is ever stored: memory O(N D + chunk M + M D) per head instead of O(N M), the M/D-times
    larger features being what made Performer need several times linear attention's memory.

    Three passes over the rows: the keys' largest exponent per (example, head) over valid keys
    (the shift, without gradient); sum_j phi(k_j) v_j^T and sum_j phi(k_j) over key chunks; each
    query chunk against those sums.
    """
    batch, q_len, heads, _ = q_BTHD.shape
    kv_len, num_features = k_BSHD.shape[1], w_MD.shape[0]

    # Key chunks with their first row's index, so each masks the rows past the end itself.
    key_chunk = min(chunk_size, kv_len)
    key_chunks = {
        "start": jnp.arange(ceil_div(kv_len, key_chunk)) * key_chunk,
        "k": _chunks(k_BSHD, key_chunk),
        "mask": None if key_mask_BS is None else _chunks(key_mask_BS, key_chunk),
    }

    def key_exponent(chunk):
        """exponent_BCHM of a key chunk, -inf at padding and past the last key."""
        valid_BC = (chunk["start"] + jnp.arange(key_chunk) < kv_len)[None, :]
        if chunk["mask"] is not None:
            valid_BC = valid_BC & chunk["mask"]
        return jnp.where(valid_BC[:, :, None, None], favor_exponent(chunk["k"], w_MD), -jnp.inf)

    top_BH = jax.lax.map(lambda chunk: key_exponent(chunk).max((1, 3)), key_chunks).max(0)
    top_BH = jax.lax.stop_gradient(_finite_or_zero(top_BH))

    @jax.checkpoint
    def key_sums(chunk):
        phi_BCHM = jnp.exp(key_exponent(chunk) - top_BH[:, None, :, None])
        phi_BCHM = phi_BCHM / math.sqrt(num_features)
        kv_BHMD = jnp.einsum("bchm,bchd->bhmd", phi_BCHM, chunk["v"].astype(jnp.float32))
        return kv_BHMD, phi_BCHM.sum(1)

    key_chunks["v"] = _chunks(v_BSHD, key_chunk)  # only the sums read the values
    kv_NBHMD, z_NBHM = jax.lax.map(key_sums, key_chunks)
    kv_BHMD, z_BHM = kv_NBHMD.sum(0), z_NBHM.sum(0)

    @jax.checkpoint
    def query_rows(q_BCHD):
        phi_BCHM, _ = favor_features(q_BCHD, w_MD)  # a query's own scale cancels in its row
        num_BCHD = jnp.einsum("bchm,bhmd->bchd", phi_BCHM, kv_BHMD)
        den_BCH = jnp.einsum("bchm,bhm->bch", phi_BCHM, z_BHM)
        return _divide(num_BCHD, den_BCH[..., None])

    out_NBCHD = jax.lax.map(query_rows, _chunks(q_BTHD, min(chunk_size, q_len)))
    out_BTHD = jnp.moveaxis(out_NBCHD, 0, 1).reshape(batch, -1, heads, v_BSHD.shape[-1])
    return out_BTHD[:, :q_len].astype(v_BSHD.dtype)


class RandomFeatures(nnx.Variable):
    """FAVOR+ projection w_MD: model state, not a trained parameter."""


class PerformerAttention(LinearAttention):
    """Performer FAVOR+ (Choromanski et al. 2021): softmax attention estimated by positive
    (orthogonal) random features, unbiased up to the ratio's O(1/M): nothing is added to the
    features, and the stabilising shifts (each query's largest exponent; for keys, the largest
    over the keys a row sees) are constants per row, which cancel.

    Options: PerformerOptions.
    """

    name = "performer"
    Options = PerformerOptions

    def __init__(self, options=None, **kwargs):
        super().__init__(options, **kwargs)
        self.num_features = self.options.num_features
        self.orthogonal = bool(self.options.orthogonal)
        self.redraw = self.options.redraw
        self.projection = RandomFeatures(self.draw(kwargs["rngs"].params()))

    def draw(self, key: jax.Array) -> Array:
        """A fresh projection w_MD."""
        return random_features(key, self.num_features, self.head_dim, orthogonal=self.orthogonal)

    def features(self, q_BTHD, k_BSHD, w_MD: Array | None = None):
        w_MD = self.projection[...] if w_MD is None else w_MD
        phi_q, _ = favor_features(q_BTHD, w_MD)  # a query's own scale cancels in its row
        return (phi_q, *favor_features(k_BSHD, w_MD))

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key, w_MD=None):
        """out_BTHD with projection `w_MD` (the stored one by default). Non-causal: feature_chunk
        rows at a time (`favor_attention`); causal: `linear_attention`'s chunked scan."""
        if self.causal:
            return self.mix(self.features(q_BTHD, k_BSHD, w_MD), v_BSHD, key_mask_BS)
        w_MD = self.projection[...] if w_MD is None else w_MD
        return favor_attention(
            q_BTHD, k_BSHD, v_BSHD, key_mask_BS, w_MD, chunk_size=self.options.feature_chunk
        )

    def __call__(
        self, x_BTE, key_mask_BT=None, *, query_mask_BT=None, deterministic=True, rngs=None
    ):
        if self.redraw == "never" or deterministic:
            return super().__call__(
                x_BTE,
                key_mask_BT,
                query_mask_BT=query_mask_BT,
                deterministic=deterministic,
                rngs=rngs,
            )
        if rngs is None:
            raise ValueError("performer with redraw='step' needs rngs with a dropout stream")
        q_BTHD, k_BTHD, v_BTHD = self.qkv(x_BTE)
        w_MD = self.draw(rngs.dropout())
        out_BTHD = self.attend(q_BTHD, k_BTHD, v_BTHD, key_mask_BT, dropout_key=None, w_MD=w_MD)
        return self.out(self.mask_queries(out_BTHD, v_BTHD, query_mask_BT))
