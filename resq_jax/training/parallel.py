"""Data parallelism: the device mesh, batch placement and the sharded train step.

The train step is `jax.shard_map` over a 1-D mesh axis named `data`: the train state (params,
optimizer state, model state, rng) is replicated, the batch is split along its leading axis,
every device runs the user's loss on its shard and the devices agree through `pmean`.

Decisions (measured on jax 0.10.2, 8 virtual CPU devices):

* Mesh axis type: `AxisType.Auto`, not the `Explicit` default of `jax.make_mesh`.
  Inside `shard_map` the `data` axis is Manual whatever its declared type, so the type only
  matters for code around the step: with Explicit axes (under `jax.set_mesh`) every array
  carries its sharding in its type, so in plain-`jit` code (e.g. an eval step) a `lax.scan` carry
  created with `jnp.zeros` (replicated) no longer type-checks against a body output derived from
  the sharded batch; and `shard_map` refuses inputs whose sharding differs from `in_specs`
  instead of resharding them.
  Auto leaves both to the compiler's sharding propagation.
* Gradient scaling: each device differentiates the mean loss over its own shard with respect to
  a *device-local* copy of the parameters, and the gradients are then `pmean`-ed once. With equal
  shards the mean of per-shard means is the mean over the global batch, so the step equals the
  single-device step on the full batch. Differentiating with respect to the replicated
  parameters directly (check_vma=True) would make JAX insert a `psum` in the transpose: the
  gradient would come back already *summed* over devices, and a further `pmean` would leave it
  `n_devices` times too large. Making the parameters device-local (`lax.pcast(...,
  to='varying')` when check_vma is on; implicit when it is off) removes that implicit sum, so
  both settings share one explicit, auditable reduction.
* `check_vma=False` by default: the loss then runs as ordinary per-device code (like `pmap`), so
  model code may build `lax.scan` carries from constants (`jnp.zeros`) even though the scanned
  inputs differ per device. With check_vma=True such carries must be `pcast` to 'varying' by the
  model, which a model-agnostic step cannot do for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

PyTree = Any
Metrics = Mapping[str, jax.Array]
# loss_fn(params, batch, rng) -> (scalar loss, metrics)
StatelessLossFn = Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, Metrics]]
# loss_fn(params, model_state, batch, rng) -> (scalar loss, (new model_state, metrics))
StatefulLossFn = Callable[
  [PyTree, PyTree, PyTree, jax.Array], tuple[jax.Array, tuple[PyTree, Metrics]]
]

# Names the step writes into the metrics dict itself; a loss_fn metric may not reuse them.
_RESERVED_METRICS = ("loss", "grad_norm")


def _optax_promotion():
  """Standard dtype promotion for optax's internals only.

  optax computes e.g. Adam's bias correction as `decay ** count` (Python float ** int32),
  which `jax_numpy_dtype_promotion='strict'` (our test setting) rejects; the loss and the
  rest of the step stay under whatever promotion mode the caller chose.
  """
  return jax.numpy_dtype_promotion("standard")


def _optax_init(optimizer: optax.GradientTransformation, params: PyTree) -> optax.OptState:
  with _optax_promotion():
    return optimizer.init(params)


@flax.struct.dataclass
class TrainState:
  """Everything one training step reads and writes; a pytree, checkpointed as a whole.

  Attributes:
    step: int32[] number of optimizer updates applied so far.
    params: pytree of trainable arrays.
    opt_state: the optax state of `params`.
    rng: uint32[2] raw PRNG key (`jax.random.PRNGKey` layout; raw so Orbax can save it). It
      never changes: step `s` on device `d` draws from `fold_in(fold_in(rng, s), d)`.
    model_state: pytree of non-trainable state that the loss updates (e.g. BatchNorm running
      statistics); `{}` when the model has none.
  """

  step: jax.Array
  params: PyTree
  opt_state: optax.OptState
  rng: jax.Array
  model_state: PyTree

  @classmethod
  def create(
    cls,
    params: PyTree,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    model_state: PyTree | None = None,
  ) -> TrainState:
    """Builds step 0: `optimizer.init(params)`, typed keys converted to raw uint32[2]."""
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
      rng = jax.random.key_data(rng)
    return cls(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=_optax_init(optimizer, params),
      rng=rng,
      model_state={} if model_state is None else model_state,
    )


def make_data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """Returns a 1-D mesh over all (global) devices with one Auto axis named `data`."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def distributed_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
  """`jax.distributed.initialize` arguments from a plain launcher's environment.

  `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`
  when set (e.g. by a shell loop or a scheduler prologue); an empty dict otherwise, in which case
  JAX detects Slurm, Open MPI, Kubernetes or TPU environments by itself.
  """
  environ = os.environ if environ is None else environ
  kwargs: dict[str, Any] = {}
  if environ.get(ENV_COORDINATOR):
    kwargs["coordinator_address"] = environ[ENV_COORDINATOR]
  for name, key in ((ENV_NUM_PROCESSES, "num_processes"), (ENV_PROCESS_ID, "process_id")):
    if environ.get(name):
      try:
        kwargs[key] = int(environ[name])
      except ValueError:
        raise ValueError(f"{name} must be an integer, got {environ[name]!r}") from None
  return kwargs


def maybe_initialize_distributed(enabled: bool, **kwargs: Any) -> bool:
  """Calls `jax.distributed.initialize(**kwargs)` once when `enabled`; True if initialised.

  Must run before anything touches a JAX backend. Without kwargs, `distributed_env()` supplies
  them from `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` where set, and
  JAX auto-detects Slurm, Open MPI or TPU otherwise. On CPU, processes exchange collectives
  through gloo (set here, before the backend starts).
  """
  if not enabled:
    return False
  if not jax.distributed.is_initialized():
    # Only the CPU backend reads this; without it CPU processes cannot run collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**(kwargs or distributed_env()))
  return True


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every leaf of `tree` on every device of `mesh` (sharding `P()`).

  The result never aliases the input buffers: the train step donates its state, and
  `device_put` reuses an input buffer that already sits on a mesh device (even with
  `may_alias=False`, measured on jax 0.10.2), which donation would then delete under the
  caller's feet; hence the explicit copy.
  Multi-host: each process must pass identical values; the array is assembled from the
  process-local copies, so no process needs to address another host's devices.
  """
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(jax.tree.map(lambda x: jnp.array(x, copy=True), tree), sharding)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x), np.shape(x)),
    tree,
  )


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
  """Turns a host-local batch into global arrays split along axis 0 over `data`.

  Args:
    batch: pytree of arrays, each [local_batch, ...]; `local_batch` must be a multiple of the
      number of this process's devices in `mesh`.
  Returns:
    The same pytree of jax.Arrays of shape [local_batch * process_count, ...], sharded
    `P('data')`; process p's rows land on its own devices (in process order).
  """
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  n_local = len(mesh.local_devices)

  def put(x: Any) -> jax.Array:
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] % n_local:
      raise ValueError(
        f"every batch leaf needs a leading axis divisible by the {n_local} local "
        f"devices; got shape {x.shape}"
      )
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)


def _average_over_devices(tree: PyTree) -> PyTree:
  """pmean of float leaves; integer leaves (counters) take the max, which equals the common
  value when every device holds the same one and keeps the integer dtype."""

  def reduce(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.inexact):
      return jax.lax.pmean(x, DATA_AXIS)
    return jax.lax.pmax(x, DATA_AXIS)

  return jax.tree.map(reduce, tree)


def make_train_step(
  loss_fn: StatelessLossFn | StatefulLossFn,
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  *,
  has_model_state: bool = False,
  check_vma: bool = False,
  donate: bool = True,
) -> Callable[[TrainState, PyTree], tuple[TrainState, dict[str, jax.Array]]]:
  """Builds the jitted data-parallel step `train_step(state, batch) -> (state, metrics)`.

  Args:
    loss_fn: per-device loss. `has_model_state=False`: `loss_fn(params, batch, rng) ->
      (loss, metrics)`; True: `loss_fn(params, model_state, batch, rng) -> (loss,
      (new_model_state, metrics))`. It sees one shard ([global_batch / n_devices, ...]) and
      must return the *mean* loss over it (f32[]) and per-example-mean scalar metrics; it
      must not call collectives over `data` itself, except through the model's synchronised
      BatchNorm (`SegNet(bn_axis_name=DATA_AXIS)`, as `experiment.models.make_model` builds):
      its batch statistics are averaged over `data` inside this step, and are the local
      batch's when the same model is applied outside it.
    optimizer: optax transformation; updates use the device-averaged gradients.
    mesh: a mesh with a `data` axis (see `make_data_mesh`).
    has_model_state: selects the loss_fn signature above. The new model state is averaged
      over devices (pmean of float leaves, pmax of integer leaves such as counters), e.g.
      running BatchNorm statistics become the mean over all shards.
    check_vma: forwarded to `jax.shard_map` (see the module docstring for the trade-off).
    donate: donate the input state's buffers, so XLA writes the new state into them instead
      of holding two copies of params and optimizer state; the passed-in state is deleted.
  Returns:
    `train_step(state, batch)` with `state` replicated on `mesh` (see `replicate`) and
    `batch` from `shard_batch`. metrics: {'loss', 'grad_norm', **loss_fn metrics}, each f32[]
    averaged over all devices (`loss` is the mean over the global batch; `grad_norm` is the
    global L2 norm of the applied, averaged gradient).
  """

  def per_device_loss(params, model_state, batch, rng):
    if has_model_state:
      return loss_fn(params, model_state, batch, rng)
    loss, metrics = loss_fn(params, batch, rng)
    return loss, (model_state, metrics)

  def step_fn(state: TrainState, batch: PyTree):
    # Same key on every call for a given (step, device): resumable and device-distinct.
    rng = jax.random.fold_in(state.rng, state.step)
    rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA_AXIS))
    local_params = state.params
    if check_vma:
      # Device-local params: no implicit psum in the transpose (module docstring).
      local_params = jax.lax.pcast(state.params, DATA_AXIS, to="varying")
    grad_fn = jax.value_and_grad(per_device_loss, has_aux=True)
    (loss, (model_state, metrics)), grads = grad_fn(local_params, state.model_state, batch, rng)
    clash = [k for k in _RESERVED_METRICS if k in metrics]
    if clash:
      raise ValueError(f"loss_fn metrics may not use the reserved names {clash}")
    # Each device holds d(mean over its shard)/d params; their mean is d(global mean).
    grads = jax.lax.pmean(grads, DATA_AXIS)
    with _optax_promotion():
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
      model_state=_average_over_devices(model_state),
    )
    metrics = {"loss": loss, **metrics}
    metrics = _average_over_devices(metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return new_state, metrics

  sharded = jax.shard_map(
    step_fn,
    mesh=mesh,
    in_specs=(P(), P(DATA_AXIS)),
    out_specs=(P(), P()),
    check_vma=check_vma,
  )
  return jax.jit(sharded, donate_argnums=(0,) if donate else ())
