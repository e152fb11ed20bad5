"""Mesh construction, logical-axis -> mesh sharding resolution, process barriers."""

from absl import flags
import jax
from jax.sharding import PartitionSpec as P
import pytest

from jaxssl import parallel


def test_mesh_shape_fills_the_rest():
  assert parallel.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
  assert parallel.mesh_shape({"data": 2, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)


@pytest.mark.parametrize(
  "shape,match",
  [
    ({"data": 3, "fsdp": 1, "tensor": 1}, "has 3 devices but 8"),
    ({"data": -1, "fsdp": 3}, "does not divide 8"),
    ({"data": -1, "fsdp": -1}, "At most one"),
    ({"model": 8}, "Unknown mesh axes"),
  ],
)
def test_mesh_shape_errors_say_what_to_change(shape, match):
  with pytest.raises(ValueError, match=match):
    parallel.mesh_shape(shape, 8)


def test_make_mesh_uses_all_devices():
  mesh = parallel.make_mesh({"data": -1, "fsdp": 2, "tensor": 1})
  assert mesh.axis_names == parallel.MESH_AXES
  assert mesh.devices.size == jax.device_count() == 8


def test_logical_sharding_maps_rules_and_replicates_indivisible_dims():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = parallel.get_rules("fsdp_tp")
  assert parallel.logical_sharding((64, 128), ("embed", "mlp"), mesh, rules).spec == P(
    "fsdp", "tensor"
  )
  # 3 is not divisible by the fsdp size 2: that dim is replicated rather than failing.
  assert parallel.logical_sharding((3, 128), ("embed", "mlp"), mesh, rules).spec == P(
    None, "tensor"
  )
  # A mesh axis is used at most once per array.
  assert parallel.logical_sharding((64, 64), ("embed", "embed"), mesh, rules).spec == P(
    "fsdp", None
  )
  assert parallel.logical_sharding((5,), None, mesh, rules).spec == P()


def test_batch_sharding_and_divisor():
  mesh = parallel.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  rules = parallel.get_rules("dp")
  assert parallel.batch_sharding(mesh, rules).spec == P(("data", "fsdp"))
  assert parallel.batch_divisor(mesh, rules) == 8


def test_rules_validation():
  with pytest.raises(ValueError, match="Unknown sharding rules preset"):
    parallel.get_rules("zero3")
  with pytest.raises(ValueError, match="names mesh axis 'model'"):
    parallel.get_rules([("embed", "model")])
  assert parallel.get_rules([["embed", ["fsdp", "tensor"]]]) == (("embed", ("fsdp", "tensor")),)


def test_orbax_barriers_use_the_key_value_store_on_cpu_unless_the_flag_is_given(monkeypatch):
  flag = flags.FLAGS["experimental_orbax_use_distributed_barrier"]
  monkeypatch.setattr(flag, "value", False)
  monkeypatch.setattr(flag, "present", 0)
  parallel._orbax_store_barriers_on_cpu()  # pylint: disable=protected-access
  assert flag.value is True
  monkeypatch.setattr(flag, "value", False)
  monkeypatch.setattr(flag, "present", 1)  # --experimental_orbax_use_distributed_barrier=false
  parallel._orbax_store_barriers_on_cpu()  # pylint: disable=protected-access
  assert flag.value is False
