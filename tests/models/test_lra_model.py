"""LRA's model in the LRA configs (config.model.init = "lra", padding_mask = "outer", cls_mask =
"first_token"): parameter counts equal to LRA's model at every released config, its
initialisation, and its masks: the outer product of query and key masks under LRA's -1e10 bias,
and the CLS vector taking the first token's mask."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import image, listops, pathfinder, retrieval, text
from research import tasks
from research.attention import ATTENTION, make_attention
from research.attention.sparsity import Band
from research.errors import UserError
from research.models import ModelConfig, build_model

LRA_CONFIGS = {
    "listops": (listops, None),
    "text": (text, None),
    "retrieval": (retrieval, None),
    "image": (image, None),
    "pathfinder32": (pathfinder, None),
    "pathfinder64": (pathfinder, "resolution=64"),
    "pathx": (pathfinder, "resolution=128"),
}


def released_model(name: str):
    """config.model of LRA config `name` at its released size, vocab and classes from the task."""
    module, arg = LRA_CONFIGS[name]
    config = module.get_config(arg)
    task = tasks.get_task(config.task).at_options(config.task_options)
    config.model.vocab_size, config.model.num_classes = task.vocab_size, task.num_classes
    return config.model


def lra_parameter_count(model) -> int:
    """The parameters of LRA's released model (lra_benchmarks/models/transformer/transformer.py,
    models/layers/common_layers.py), counted by hand from its modules:

    - Embed: vocab x emb (`nn.Embed`, input_embed).
    - CLS pooling: the `cls` parameter (1, 1, emb), and positions for max_len + 1 (transformer.py
      does `max_len += 1` before AddPositionEmbs).
    - AddPositionEmbs: learned -> (max_len [+1]) x emb; fixed sinusoids are no parameter.
    - each TransformerBlock: LayerNorm (scale + bias, 2 emb); nn.SelfAttention(bias=False):
      query, key, value kernels emb x qkv and the out kernel qkv x emb, no biases; LayerNorm
      (2 emb); MlpBlock: Dense emb -> mlp (kernel + bias), Dense mlp -> emb (kernel + bias).
    - encoder_norm: the final LayerNorm (2 emb).
    - classifier_head: Dense emb -> mlp_dim (+ bias), ReLU, Dense mlp_dim -> classes (+ bias).
    - classifier_head_dual (Retrieval's TransformerDualEncoder, one shared encoder without CLS):
      [u, v] (2 emb) -> Dense mlp_dim -> ReLU -> Dense mlp_dim // 2 -> ReLU -> Dense classes,
      each with a bias.
    """
    e, q, m, c = model.emb_dim, model.qkv_dim, model.mlp_dim, model.num_classes
    cls = model.pool == "cls"
    count = model.vocab_size * e + cls * e
    if model.positional == "learned":
        count += (model.max_len + cls) * e
    attention = 4 * e * q  # q, k, v kernels and the out kernel, no biases
    mlp = (e * m + m) + (m * e + e)
    count += model.num_layers * (2 * e + attention + 2 * e + mlp)
    count += 2 * e  # encoder_norm
    if model.head == "two_tower":
        count += (2 * e * m + m) + (m * (m // 2) + m // 2) + ((m // 2) * c + c)
    else:
        count += (e * m + m) + (m * c + c)
    return count


def parameter_count(config: ModelConfig) -> int:
    """nnx.Param elements of the model `config` builds, from shapes alone (nothing allocated)."""
    abstract = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize("name", sorted(LRA_CONFIGS))
def test_parameter_count_is_lra_models_at_each_released_config(name):
    model = released_model(name)
    assert (model.init, model.padding_mask, model.cls_mask) == ("lra", "outer", "first_token")
    assert parameter_count(ModelConfig.from_config(model)) == lra_parameter_count(model)


def test_listops_parameter_count_by_the_numbers():
    """The formula at ListOps (vocab 16, emb 512, qkv 512, mlp 1024, 4 layers, fixed positions,
    10 classes), written out: a check on the formula itself."""
    embed_and_cls = 16 * 512 + 512
    block = 2 * 512 + 4 * 512 * 512 + 2 * 512 + (512 * 1024 + 1024) + (1024 * 512 + 512)
    head = (512 * 1024 + 1024) + (1024 * 10 + 10)
    expected = embed_and_cls + 4 * block + 2 * 512 + head
    assert lra_parameter_count(released_model("listops")) == expected == 8_948_234


def small_model(attention="full", **overrides):
    """An LRA-configured classifier (listops tiny: CLS pooling, init lra, outer mask, CLS with
    the first token's mask), small enough to run in milliseconds."""
    config = listops.get_config(f"size=tiny,attention={attention}").model
    config.vocab_size, config.num_classes = 16, 10
    config.update(max_len=12, emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32, num_layers=2)
    config.update(overrides)
    return build_model(ModelConfig.from_config(config), rngs=nnx.Rngs(0))


def flat_params(module) -> dict:
    return {
        "/".join(map(str, path)): np.asarray(value[...])
        for path, value in nnx.to_flat_state(nnx.state(module, nnx.Param))
    }


def xavier_std(fan_in: int, fan_out: int) -> float:
    """Xavier-uniform's standard deviation: U(-a, a), a = sqrt(6 / (fan_in + fan_out))."""
    return math.sqrt(2 / (fan_in + fan_out))


def test_lra_init_statistics_at_listops_width():
    """One block at ListOps' width: projection kernels Xavier-uniform over the flattened (in, out)
    shape (as old flax's DenseGeneral drew them) with no biases; MLP kernels Xavier-uniform,
    biases N(0, 1e-6)."""
    model = small_model(emb_dim=512, num_heads=8, qkv_dim=512, mlp_dim=1024, num_layers=1)
    params = flat_params(model.encoder.blocks[0])
    attention = {name: x for name, x in params.items() if name.startswith("attention/")}
    assert sorted(attention) == [f"attention/{p}/kernel" for p in ("key", "out", "query", "value")]
    for name, kernel in attention.items():
        assert kernel.size == 512 * 512, name
        bound = math.sqrt(6 / (512 + 512))
        assert np.abs(kernel).max() <= bound
        np.testing.assert_allclose(kernel.std(), xavier_std(512, 512), rtol=0.02, err_msg=name)
    for layer, (fan_in, fan_out) in {"up": (512, 1024), "down": (1024, 512)}.items():
        kernel, bias = params[f"mlp/{layer}/kernel"], params[f"mlp/{layer}/bias"]
        np.testing.assert_allclose(kernel.std(), xavier_std(fan_in, fan_out), rtol=0.02)
        assert np.abs(kernel).max() <= math.sqrt(6 / (fan_in + fan_out))
        assert bias.any() and abs(bias.mean()) < 1e-6
        np.testing.assert_allclose(bias.std(), 1e-6, rtol=0.15)


def test_lra_init_uses_the_flattened_fans_when_qkv_differs_from_emb():
    """Image's shape (emb 128, qkv 64): q/k/v kernels (128, H, D) have fans (128, 64), the out
    kernel (H, D, 128) has (64, 128), as old flax drew them flattened."""
    model = small_model(emb_dim=128, num_heads=8, qkv_dim=64, mlp_dim=128, num_layers=1)
    params = flat_params(model.encoder.blocks[0].attention)
    for name, kernel in params.items():
        np.testing.assert_allclose(kernel.std(), xavier_std(128, 64), rtol=0.05, err_msg=name)


@pytest.mark.parametrize("attention", sorted(ATTENTION))
def test_every_variant_takes_lra_init(attention):
    """No variant builds its own projections: under init=lra none has a projection bias, and
    under init=nnx (the default, which older checkpoints hold) all four keep theirs."""
    lra = flat_params(small_model(attention).encoder.blocks[0].attention)
    projections = {"query", "key", "value", "out"}
    assert not [n for n in lra if n.split("/")[0] in projections and n.endswith("bias")]
    assert {n.split("/")[0] for n in lra} >= projections
    nnx_ = flat_params(small_model(attention, init="nnx").encoder.blocks[0].attention)
    assert {f"{p}/bias" for p in projections} <= set(nnx_)


def lra_attention(x_BTE, mask_BT, attention, *, band: Band):
    """Old flax's nn.attention as LRA calls it, written apart from the module: the mask is the
    outer product of query and key masks, turned into a bias of 0 or -1e10 added to the logits,
    softmax over every key (the band's); then the out projection."""
    params = {n: getattr(attention, n).kernel[...] for n in ("query", "key", "value", "out")}
    q = jnp.einsum("bte,ehd->bthd", x_BTE, params["query"])
    k = jnp.einsum("bte,ehd->bthd", x_BTE, params["key"])
    v = jnp.einsum("bte,ehd->bthd", x_BTE, params["value"])
    logits = jnp.einsum("bthd,bshd->bhts", q / math.sqrt(q.shape[-1]), k)
    mask = mask_BT[:, None, :, None] & mask_BT[:, None, None, :]
    logits = logits + jnp.where(mask, 0.0, -1e10)
    # A narrower band (ours; LRA's Transformer has none) leaves out the keys it does not allow.
    logits = jnp.where(band.dense(x_BTE.shape[1], x_BTE.shape[1]), logits, -jnp.inf)
    out = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(logits, axis=-1), v)
    return jnp.einsum("bthd,hde->bte", out, params["out"])


MASKS = np.array(
    [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 1, 1, 1, 0, 1, 1],  # padding first and inside (black pixels)
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # nothing real (an all-black image)
    ],
    bool,
)


@pytest.mark.parametrize(
    "attention, options, band",
    [
        ("full", {"implementation": "dense"}, Band()),
        ("full", {"implementation": "kernel", "block_q": 4, "block_k": 4}, Band()),
        ("local", {"window": 2, "implementation": "dense"}, Band(window=2)),
        ("block_local", {"block_size": 4, "implementation": "kernel"}, Band(block=4)),
    ],
)
def test_outer_padding_mask_is_lras_bias_of_minus_1e10(attention, options, band):
    """Every row, padded queries included, equals LRA's attention: real rows ignore padded keys,
    a padded query's row attends uniformly to every key its band allows; no NaN anywhere, even in
    a row of nothing but padding."""
    module = make_attention(
        attention, options, in_features=8, num_heads=2, init="lra", rngs=nnx.Rngs(0)
    )
    x_BTE = jax.random.normal(jax.random.key(1), (4, 10, 8))
    mask_BT = jnp.asarray(MASKS)
    got = module(x_BTE, mask_BT, query_mask_BT=mask_BT)
    expected = lra_attention(x_BTE, mask_BT, module, band=band)
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Real rows are what key masking alone gives.
    keys_only = module(x_BTE, mask_BT)
    real = np.asarray(MASKS)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(keys_only)[real], atol=1e-6)


@pytest.mark.parametrize("attention", ["linear", "performer"])
def test_outer_padding_mask_in_linear_variants_averages_padded_rows(attention):
    """Linear variants: real rows unchanged by the query mask, padded rows the plain mean of all
    values (what a row of equal scores gives), finite."""
    module = make_attention(attention, {}, in_features=8, num_heads=2, rngs=nnx.Rngs(0))
    x_BTE = jax.random.normal(jax.random.key(1), (4, 10, 8))
    mask_BT = jnp.asarray(MASKS)
    got = np.asarray(module(x_BTE, mask_BT, query_mask_BT=mask_BT))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[MASKS], np.asarray(module(x_BTE, mask_BT))[MASKS], atol=1e-6)
    mean_B1E = np.asarray(module.out(module.value(x_BTE).mean(axis=1)))[:, None]
    np.testing.assert_allclose(got, np.where(MASKS[..., None], got, mean_B1E), atol=1e-6)


def pixel_batch(first_black: bool, seed=0):
    """Image-like tokens with token 0 as padding (mask_zero_tokens); row 0's first pixel is
    black when `first_black`, row 1's never."""
    tokens = np.random.default_rng(seed).integers(0, 16, (2, 12))
    tokens[:, 0] = 5
    if first_black:
        tokens[0, 0] = 0
    return {"tokens": jnp.asarray(tokens), "mask": jnp.ones((2, 12), bool)}


def test_cls_with_the_first_tokens_mask_changes_the_logits_only_where_it_is_padding():
    """With a black first pixel LRA masks the CLS vector (query and key): the logits differ from
    a CLS that is always real exactly on that example."""
    lra = small_model(mask_zero_tokens=True)
    real_cls = small_model(mask_zero_tokens=True, cls_mask="real")
    batch = pixel_batch(first_black=True)
    a, b = np.asarray(lra(batch)), np.asarray(real_cls(batch))
    assert np.isfinite(a).all()
    assert not np.allclose(a[0], b[0], atol=1e-4)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
    # The CLS vector's mask is the first token's.
    _, mask_BL = lra.encoder.embed(batch["tokens"], batch["mask"])
    np.testing.assert_array_equal(np.asarray(mask_BL[:, 0]), [False, True])


def test_outer_padding_mask_leaves_real_positions_and_pooled_logits_unchanged():
    """Padded queries' rows never reach a real position: encoder outputs at real positions and
    mean-pooled logits equal key masking alone's, and nothing is NaN (an all-padding row too)."""
    tokens = np.random.default_rng(0).integers(1, 16, (3, 12))
    mask = np.arange(12)[None] < np.array([[12], [5], [0]])
    batch = {"tokens": jnp.asarray(np.where(mask, tokens, 0)), "mask": jnp.asarray(mask)}
    outer = small_model(pool="mean")
    keys = small_model(pool="mean", padding_mask="keys")
    out_o, _ = outer.encoder(batch["tokens"], batch["mask"], deterministic=True, rngs=None)
    out_k, _ = keys.encoder(batch["tokens"], batch["mask"], deterministic=True, rngs=None)
    assert np.isfinite(np.asarray(out_o)).all()
    np.testing.assert_allclose(np.asarray(out_o)[mask], np.asarray(out_k)[mask], atol=1e-5)
    assert not np.allclose(np.asarray(out_o)[~mask], np.asarray(out_k)[~mask])
    np.testing.assert_allclose(outer(batch), keys(batch), rtol=1e-5, atol=1e-5)


def loss_grads(model, batch, labels):
    def loss(model):
        logits = model(batch)
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()

    return nnx.grad(loss)(model)


def test_gradients_under_lra_masks_are_finite_and_follow_the_cls_mask():
    """Gradients through the masked CLS row and an all-padding example are finite; they differ
    from an always-real CLS's (the CLS row now averages every value, padding included)."""
    batch = pixel_batch(first_black=True)
    batch["tokens"] = batch["tokens"].at[1].set(0)  # an all-black second image
    labels = jnp.array([3, 7])
    lra = loss_grads(small_model(mask_zero_tokens=True), batch, labels)
    real_cls = loss_grads(small_model(mask_zero_tokens=True, cls_mask="real"), batch, labels)
    leaves = jax.tree.leaves(nnx.state(lra, nnx.Param))
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
    query = lra.encoder.blocks[0].attention.query.kernel[...]
    assert np.abs(np.asarray(query)).max() > 0
    assert not np.allclose(query, real_cls.encoder.blocks[0].attention.query.kernel[...])


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "init",
            "xavier",
            "config.model.init='xavier' is not valid; choose one of: nnx, lra, zoology",
        ),
        ("padding_mask", "both", "config.model.padding_mask='both' is not valid; choose one of"),
        ("cls_mask", "never", "config.model.cls_mask='never' is not valid; choose one of: real"),
    ],
)
def test_bad_lra_model_fields_are_one_line_errors(field, value, message):
    config = listops.get_config("size=tiny").model
    config.vocab_size, config.num_classes = 16, 10
    config[field] = value
    with pytest.raises(UserError, match=message) as error:
        ModelConfig.from_config(config)
    assert "\n" not in str(error.value)
