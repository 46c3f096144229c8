"""The sharded train step against single-device oracles on 8 virtual CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from resq_jax.training import parallel as par

N_DEV = 8
N_STEPS = 3
# float32: the sharded path sums 8 partial gradients in another order than the full-batch one.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == N_DEV
  return par.make_data_mesh()


def _mlp_params(seed: int = 0) -> dict:
  r = np.random.default_rng(seed)
  return {
    "w1": jnp.asarray(r.normal(size=(3, 16)), jnp.float32),
    "b1": jnp.asarray(r.normal(size=(16,)) * 0.1, jnp.float32),
    "w2": jnp.asarray(r.normal(size=(16, 2)) * 0.3, jnp.float32),
    "b2": jnp.zeros((2,), jnp.float32),
  }


def _mlp_batches(seed: int = 1, global_batch: int = 32) -> list[dict]:
  r = np.random.default_rng(seed)
  return [
    {
      "x": r.normal(size=(global_batch, 3)).astype(np.float32),
      "y": r.normal(size=(global_batch, 2)).astype(np.float32),
    }
    for _ in range(N_STEPS)
  ]


def _mlp_loss(params, batch, rng):
  del rng
  h = jnp.tanh(batch["x"] @ params["w1"] + params["b1"][None, :])
  err = h @ params["w2"] + params["b2"][None, :] - batch["y"]
  return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err))}


def _assert_trees_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("check_vma", [False, True])
def test_sharded_step_equals_full_batch_single_device_step(mesh, check_vma):
  optimizer = optax.adamw(1e-2, weight_decay=1e-2)
  traces = []

  def counting_loss(params, batch, rng):
    traces.append(1)  # runs only while tracing
    return _mlp_loss(params, batch, rng)

  train_step = par.make_train_step(counting_loss, optimizer, mesh, check_vma=check_vma)
  state = par.replicate(
    par.TrainState.create(_mlp_params(), optimizer, jax.random.PRNGKey(0)), mesh
  )

  # Oracle: plain jit on one device, mean loss over the whole batch, no collectives.
  @jax.jit
  def reference_step(params, opt_state, batch):
    (loss, metrics), grads = jax.value_and_grad(_mlp_loss, has_aux=True)(params, batch, None)
    with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
      updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, metrics

  ref_params = _mlp_params()
  ref_opt = optimizer.init(ref_params)
  for batch in _mlp_batches():
    state, metrics = train_step(state, par.shard_batch(batch, mesh))
    ref_params, ref_opt, ref_loss, ref_metrics = reference_step(ref_params, ref_opt, batch)
    _assert_trees_close(state.params, ref_params)
    np.testing.assert_allclose(metrics["loss"], ref_loss, rtol=RTOL)
    np.testing.assert_allclose(metrics["mae"], ref_metrics["mae"], rtol=RTOL)
  _assert_trees_close(state.opt_state, ref_opt)
  assert int(state.step) == N_STEPS
  assert state.params["w1"].sharding.spec == P()  # still replicated: no resharding next call
  assert len(traces) == 1  # one compilation for all steps


def _bn_like_loss(params, model_state, batch, rng):
  """Normalises with the shard's own mean, tracks a running mean, adds rng noise."""
  x = batch["x"]
  mu = jnp.mean(x, axis=0)
  noise = 0.1 * jax.random.normal(rng, x.shape, jnp.float32)
  h = (x - mu[None, :] + noise) @ params["w"]
  loss = jnp.mean((h - batch["y"]) ** 2)
  new_state = {"mean": 0.9 * model_state["mean"] + 0.1 * mu, "count": model_state["count"] + 1}
  return loss, (new_state, {"h_mean": jnp.mean(h)})


def test_model_state_and_rng_match_per_shard_reference(mesh):
  optimizer = optax.sgd(0.1, momentum=0.9)  # scale-sensitive, unlike Adam
  params = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(3, 2)), jnp.float32)}
  model_state = {"mean": jnp.zeros((3,), jnp.float32), "count": jnp.zeros((), jnp.int32)}
  typed_key = jax.random.key(7)
  state = par.TrainState.create(params, optimizer, typed_key, model_state)
  np.testing.assert_array_equal(state.rng, jax.random.key_data(typed_key))
  rng = state.rng  # replicate() copies, so donating the replicated state keeps these alive
  state = par.replicate(state, mesh)
  train_step = par.make_train_step(_bn_like_loss, optimizer, mesh, has_model_state=True)

  r = np.random.default_rng(3)
  # Per-shard offsets make per-device batch means differ, so per-device statistics matter.
  offsets = np.repeat(np.arange(N_DEV, dtype=np.float32), 2)[:, None]
  batches = [
    {
      "x": (r.normal(size=(2 * N_DEV, 3)) + offsets).astype(np.float32),
      "y": r.normal(size=(2 * N_DEV, 2)).astype(np.float32),
    }
    for _ in range(N_STEPS)
  ]

  # Oracle: one device maps the unsharded loss over the 8 shards with the documented
  # per-device keys, then averages gradients, losses, metrics and the new running mean.
  @jax.jit
  def reference_per_shard(params, model_state, batch, step):
    shards = jax.tree.map(lambda a: a.reshape(N_DEV, -1, *a.shape[1:]), batch)
    step_key = jax.random.fold_in(rng, step)
    keys = jax.vmap(lambda d: jax.random.fold_in(step_key, d))(jnp.arange(N_DEV))
    grad_fn = jax.value_and_grad(_bn_like_loss, has_aux=True)
    return jax.vmap(grad_fn, in_axes=(None, None, 0, 0))(params, model_state, shards, keys)

  ref_params, ref_opt, ref_ms = params, optimizer.init(params), model_state
  for step, batch in enumerate(batches):
    state, metrics = train_step(state, par.shard_batch(batch, mesh))
    (losses, (new_ms, ref_metrics)), grads = reference_per_shard(ref_params, ref_ms, batch, step)
    grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    ref_ms = {"mean": jnp.mean(new_ms["mean"], axis=0), "count": new_ms["count"][0]}
    with jax.numpy_dtype_promotion("standard"):
      updates, ref_opt = optimizer.update(grads, ref_opt, ref_params)
    ref_params = optax.apply_updates(ref_params, updates)
    ref_loss, ref_h_mean = jnp.mean(losses), jnp.mean(ref_metrics["h_mean"])

    _assert_trees_close(state.params, ref_params)
    np.testing.assert_allclose(state.model_state["mean"], ref_ms["mean"], rtol=RTOL)
    assert int(state.model_state["count"]) == step + 1
    np.testing.assert_allclose(metrics["loss"], ref_loss, rtol=RTOL)
    np.testing.assert_allclose(metrics["h_mean"], ref_h_mean, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("check_vma", [False, True])
def test_gradient_scale_is_the_global_batch_mean(mesh, check_vma):
  # loss = mean_i(w * x_i) has dloss/dw = mean(x) = 7.5 for x = 0..15; a gradient summed
  # over the 8 devices instead of averaged would give 60.
  def loss_fn(params, batch, rng):
    del rng
    return jnp.mean(params["w"] * batch["x"]), {}

  optimizer = optax.sgd(1.0)
  state = par.replicate(
    par.TrainState.create({"w": jnp.float32(1.0)}, optimizer, jax.random.PRNGKey(0)), mesh
  )
  train_step = par.make_train_step(loss_fn, optimizer, mesh, check_vma=check_vma)
  x = np.arange(16, dtype=np.float32)
  state, metrics = train_step(state, par.shard_batch({"x": x}, mesh))
  assert float(metrics["loss"]) == 7.5  # mean(1 * x)
  assert float(metrics["grad_norm"]) == 7.5
  assert float(state.params["w"]) == 1.0 - 7.5


def test_shard_batch_places_consecutive_rows_on_consecutive_devices(mesh):
  assert mesh.axis_names == (par.DATA_AXIS,)
  assert mesh.axis_types == (AxisType.Auto,)
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  arr = par.shard_batch({"x": x}, mesh)["x"]
  np.testing.assert_array_equal(np.asarray(arr), x)
  for i, device in enumerate(mesh.devices.flat):
    shard = next(s for s in arr.addressable_shards if s.device == device)
    np.testing.assert_array_equal(np.asarray(shard.data), x[2 * i : 2 * i + 2])
  with pytest.raises(ValueError, match="divisible"):
    par.shard_batch({"x": x[:12]}, mesh)


def test_reserved_metric_names_are_rejected(mesh):
  def loss_fn(params, batch, rng):
    del rng
    loss = jnp.mean(params["w"] * batch["x"])
    return loss, {"loss": loss}

  optimizer = optax.sgd(1.0)
  state = par.replicate(
    par.TrainState.create({"w": jnp.float32(1.0)}, optimizer, jax.random.PRNGKey(0)), mesh
  )
  train_step = par.make_train_step(loss_fn, optimizer, mesh, donate=False)
  with pytest.raises(ValueError, match="reserved"):
    train_step(state, par.shard_batch({"x": np.ones(8, np.float32)}, mesh))


def test_synchronised_batch_norm_one_and_eight_devices_agree():
  """Float training of a BatchNorm network (SegNet with bn_axis_name='data'): the step on 8
  devices equals the step on 1 device with the same global batch (loss, every parameter and
  the running statistics), because the batch statistics are averaged over the data axis.
  Without the averaging (bn_axis_name=None) the two differ well beyond float round-off."""
  from resq_jax.nn.models import SegNet

  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16, 16, 3)), jnp.float32)
  y = jnp.asarray(np.random.default_rng(1).integers(0, 3, size=(8, 16, 16)), jnp.int32)

  def run(bn_axis_name, n_devices):
    model = SegNet(
      3, width=4, num_branches=2, num_stages=1, head_width=8, bn_axis_name=bn_axis_name
    )
    variables = SegNet(3, width=4, num_branches=2, num_stages=1, head_width=8).init(
      jax.random.key(0), x[:1]
    )

    def loss_fn(params, batch_stats, batch, rng):
      del rng
      logits, mutated = model.apply(
        {"params": params, "batch_stats": batch_stats},
        batch["x"],
        train=True,
        mutable=["batch_stats"],
      )
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
      return jnp.mean(ce), (mutated["batch_stats"], {})

    optimizer = optax.sgd(0.1)
    mesh = jax.make_mesh(
      (n_devices,),
      ("data",),
      devices=jax.devices()[:n_devices],
      axis_types=(AxisType.Auto,),
    )
    step = par.make_train_step(loss_fn, optimizer, mesh, has_model_state=True, donate=False)
    state = par.replicate(
      par.TrainState.create(
        variables["params"], optimizer, jax.random.key(0), variables["batch_stats"]
      ),
      mesh,
    )
    new_state, metrics = step(state, par.shard_batch({"x": x, "y": y}, mesh))
    return float(metrics["loss"]), jax.device_get((new_state.params, new_state.model_state))

  loss1, trees1 = run("data", 1)
  loss8, trees8 = run("data", 8)
  assert loss8 == pytest.approx(loss1, rel=1e-5)
  for a, e in zip(jax.tree.leaves(trees8), jax.tree.leaves(trees1), strict=True):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)
  # The control: per-device statistics change the step.
  loss8_local, _ = run(None, 8)
  assert abs(loss8_local - loss1) > 1e-3 * abs(loss1)


def test_make_model_batch_norm_follows_where_it_runs():
  """``make_model``'s SegNet (BatchNorm axis 'data', set by make_model, nothing by the user):
  inside make_train_step on 8 devices the batch statistics are synchronised, so the step equals
  a plain single-device SGD step of the same model outside any shard_map (a user's own loop,
  where the statistics are the whole batch's)."""
  from resq_jax.experiment.models import make_model
  from resq_jax.experiment.spec import ModelSpec
  from resq_jax.quant.recipe import float_recipe

  class Task:
    def num_outputs(self):
      return 3

  model = make_model(ModelSpec(preset="tiny"), Task(), float_recipe())
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16, 16, 3)), jnp.float32)
  y = jnp.asarray(np.random.default_rng(1).integers(0, 3, size=(8, 16, 16)), jnp.int32)
  variables = model.init(jax.random.key(0), x[:1])

  def loss_fn(params, batch_stats, batch, rng):
    del rng
    logits, mutated = model.apply(
      {"params": params, "batch_stats": batch_stats},
      batch["x"],
      train=True,
      mutable=["batch_stats"],
    )
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    return jnp.mean(ce), (mutated["batch_stats"], {})

  optimizer = optax.sgd(0.1)
  # The user's loop: no mesh, no shard_map.
  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, (stats, _)), grads = grad_fn(
    variables["params"], variables["batch_stats"], {"x": x, "y": y}, None
  )
  updates, _ = optimizer.update(grads, optimizer.init(variables["params"]))
  want = (optax.apply_updates(variables["params"], updates), stats)
  # The sharded step on 8 devices.
  mesh = par.make_data_mesh()
  step = par.make_train_step(loss_fn, optimizer, mesh, has_model_state=True, donate=False)
  state = par.replicate(
    par.TrainState.create(
      variables["params"], optimizer, jax.random.key(0), variables["batch_stats"]
    ),
    mesh,
  )
  new_state, metrics = step(state, par.shard_batch({"x": x, "y": y}, mesh))
  assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-5)
  got = jax.device_get((new_state.params, new_state.model_state))
  for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)
