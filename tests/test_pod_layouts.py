"""The TPU pod layouts are compiler facts: every recipes.POD_LAYOUTS entry has a record of
`python benchmarks/pod_layouts.py` (libtpu's compiler, for the layout's real slice) made with
the layout as it stands, and fits its chip with HEADROOM of HBM free."""

import json
import os

import pytest

from configs import pretrain as recipes
from electra_jax import compile as compile_lib
from electra_jax import sharding, tpu

RECORDS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results", "pod_layouts"
)


@pytest.mark.parametrize("size, pod", list(recipes.POD_LAYOUTS))
@pytest.mark.parametrize("seq", [128, 512])
def test_the_layout_was_compiled_as_it_stands_and_fits_with_headroom(size, pod, seq):
    batch, grad_accum, fsdp, remat = recipes.POD_LAYOUTS[(size, pod)]
    path = os.path.join(RECORDS, f"{size}_{pod}_{seq}.json")
    assert os.path.exists(path), (
        f"compile it: python benchmarks/pod_layouts.py --out={RECORDS} --size={size} --pod={pod}"
    )
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    recorded = (record["batch"], record["grad_accum_steps"], record["fsdp"], record["remat_policy"])
    assert recorded == (batch, grad_accum, fsdp, remat), f"{size},{pod} changed since {path} was compiled: recompile it"
    assert "error" not in record, record.get("error")
    assert record["hbm_headroom"] >= compile_lib.HEADROOM, (size, pod, seq, record["per_device_bytes"]["peak"])
    assert record["devices"] == tpu.get_slice(pod).chips
    # the microbatch splits evenly over the chips, as train's own check demands
    config = recipes.pod_config(size, pod)
    shards = sharding.mesh_shape(config.mesh, record["devices"])
    assert (batch // grad_accum) % (shards[0] * shards[1]) == 0


def test_an_unknown_pod_is_refused():
    with pytest.raises(ValueError, match="no layout for size='base' on pod='v3-8'"):
        recipes.pod_config("base", "v3-8")
