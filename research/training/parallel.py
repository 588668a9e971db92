"""Devices, processes and how a step runs across them.

Two interchangeable ways to run the same pure step function:

- "jit" (default): one `jax.jit` program over a 1-D mesh named "data". Batches are split across
  devices with `NamedSharding`; parameters and optimizer state are replicated, or with
  `config.fsdp` sharded along their largest divisible axis (FSDP style), and XLA inserts the
  collectives. Works unchanged on one CPU, several GPUs, or a multi-host TPU pod.
- "pmap": the classic `jax.pmap` over local devices; the step averages gradients itself through
  `Collectives` (`lax.pmean`), which are identities under jit, so the step functions in
  research/training/train.py do not know which mode runs them.

Batches arrive as process-local numpy arrays (each process reads only its own part of every
global batch) and become global arrays here.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from research.errors import UserError, check_choice

PARALLELISM = ("jit", "pmap")
AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Collectives:
    """What a step does across devices, so the same step function runs under jit and pmap.

    Under jit (no axis) the batch is one global array: the mean and sums are already global and
    XLA inserts the collectives, so these are identities. Under pmap each device holds a slice
    and they are `lax` collectives over the device axis; each device also gets its own dropout key.
    """

    axis_name: str | None = None

    def mean(self, tree):
        return jax.lax.pmean(tree, self.axis_name) if self.axis_name else tree

    def sum(self, tree):
        return jax.lax.psum(tree, self.axis_name) if self.axis_name else tree

    def device_key(self, key: jax.Array) -> jax.Array:
        if not self.axis_name:
            return key
        return jax.random.fold_in(key, jax.lax.axis_index(self.axis_name))


JIT = Collectives()  # what a step under jit (or on one device) uses


def fsdp_spec(shape: tuple[int, ...], num_devices: int) -> P:
    """Shards the largest axis divisible by the device count; small or odd arrays stay whole."""
    candidates = [(size, axis) for axis, size in enumerate(shape) if size % num_devices == 0]
    if num_devices == 1 or not candidates:
        return P()
    _, axis = max(candidates)
    return P(*([None] * axis + [AXIS]))


@dataclasses.dataclass
class Topology:
    """The device mesh and this process's place in it."""

    mode: str
    mesh: Mesh
    fsdp: bool = False

    @classmethod
    def from_config(cls, config) -> "Topology":
        check_choice("config.parallelism", config.parallelism, PARALLELISM)
        if config.parallelism == "pmap" and config.fsdp:
            raise UserError("config.fsdp=True needs config.parallelism='jit'")
        mesh = Mesh(np.array(jax.devices()), (AXIS,), axis_types=(AxisType.Auto,))
        topology = cls(config.parallelism, mesh, config.fsdp)
        for field in ("batch_size", "eval_batch_size"):
            topology.check_divisible(f"config.{field}", config[field])
        return topology

    @property
    def collectives(self) -> Collectives:
        """The cross-device operations a step function should use in this mode."""
        return Collectives(AXIS if self.mode == "pmap" else None)

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def process_index(self) -> int:
        return jax.process_index()

    @property
    def process_count(self) -> int:
        return jax.process_count()

    @property
    def is_main_process(self) -> bool:
        return jax.process_index() == 0

    def check_divisible(self, field: str, global_batch: int) -> None:
        if global_batch % self.num_devices:
            raise UserError(
                f"{field}={global_batch} must be divisible by the number of devices "
                f"({self.num_devices})"
            )

    def local_batch_size(self, global_batch: int) -> int:
        return global_batch // self.process_count

    # --------------------------------------------------------------------------- placement

    def _state_sharding(self, state):
        def spec(leaf):
            shape = np.shape(leaf)
            return NamedSharding(
                self.mesh, fsdp_spec(shape, self.num_devices) if self.fsdp else P()
            )

        return jax.tree.map(spec, state)

    def abstract_state(self, state):
        """ShapeDtypeStructs with the shardings a restored checkpoint should have (host layout)."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), state)
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
            state,
            self._state_sharding(state),
        )

    def put_state(self, state):
        """Host or checkpoint layout -> the layout the step expects."""
        if self.mode == "pmap":
            devices = jax.local_devices()
            stacked = NamedSharding(Mesh(np.array(devices), (AXIS,)), P(AXIS))
            return jax.tree.map(
                lambda x: jax.device_put(
                    jnp.broadcast_to(x, (len(devices), *np.shape(x))), stacked
                ),
                state,
            )
        return jax.device_put(state, self._state_sharding(state))

    def host_state(self, state):
        """The step's layout -> one logical copy (what checkpoints and evaluation take)."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x[0], state)
        return state

    def put_batch(self, batch: dict):
        """Process-local numpy batch -> global device arrays (jit) or per-device slices (pmap)."""
        if self.mode == "pmap":
            devices = jax.local_device_count()
            return jax.tree.map(lambda x: x.reshape(devices, -1, *x.shape[1:]), batch)
        sharding = NamedSharding(self.mesh, P(AXIS))
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

    def unreplicate_metrics(self, metrics):
        return jax.tree.map(lambda x: x[0], metrics) if self.mode == "pmap" else metrics

    # --------------------------------------------------------------------------- compiling

    def compile_train_step(self, train_step, state):
        """train_step(state, batch) -> (state, metrics), compiled for this topology."""
        if self.mode == "pmap":
            return jax.pmap(train_step, axis_name=AXIS, donate_argnums=0)
        state_sharding = self._state_sharding(state)
        return jax.jit(
            train_step,
            in_shardings=(state_sharding, NamedSharding(self.mesh, P(AXIS))),
            out_shardings=(state_sharding, NamedSharding(self.mesh, P())),
            donate_argnums=0,
        )

    def compile_eval_step(self, eval_step):
        """eval_step(params, rest, batch) -> metric sums, compiled for this topology."""
        if self.mode == "pmap":
            return jax.pmap(eval_step, axis_name=AXIS)
        return jax.jit(eval_step, out_shardings=NamedSharding(self.mesh, P()))

    # --------------------------------------------------------------------------- processes

    def barrier(self, name: str) -> None:
        if self.process_count > 1:
            multihost_utils.sync_global_devices(name)
