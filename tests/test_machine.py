import dataclasses
import os
import subprocess
import sys

import keras
import pytest

from lstm_stn_tf import machine
from lstm_stn_tf.reproduce import variant
from lstm_stn_tf.training import TrainConfig

EPYC_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
SAPPHIRE_RAPIDS = ("model name\t: Intel(R) Xeon(R) Processor\n"
                   "flags\t\t: avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile\n")
AVX512_NO_BF16 = "model name\t: Intel Xeon Skylake\nflags\t\t: avx2 fma avx512f avx512bw avx512_vnni\n"


def test_cpu_flags_and_model_are_read_from_cpuinfo():
    assert machine.cpu_flags(EPYC_AVX2) == {"fpu", "sse2", "avx", "avx2", "fma", "bmi2"}
    assert machine.cpu_model(EPYC_AVX2) == "AMD EPYC 7B13"
    assert machine.cpu_flags("") == set()


@pytest.mark.parametrize("cpuinfo, expected", [
    (EPYC_AVX2, "float32"),
    (AVX512_NO_BF16, "float32"),  # AVX-512 alone emulates bfloat16 too
    (SAPPHIRE_RAPIDS, "mixed_bfloat16"),
    ("model name\t: Cooper Lake\nflags\t\t: avx512f avx512_bf16\n", "mixed_bfloat16"),
    ("", "float32"),  # flags unknown (not Linux): the safe choice
])
def test_auto_takes_bfloat16_only_where_the_cpu_computes_it_natively(cpuinfo, expected):
    precision, reason = machine.choose_precision("auto", flags=machine.cpu_flags(cpuinfo), device="", isa_cap="")
    assert precision == expected
    assert reason.startswith("auto: ")


def test_a_onednn_cap_below_bfloat16_keeps_float32():
    sapphire = machine.cpu_flags(SAPPHIRE_RAPIDS)
    assert machine.choose_precision("auto", flags=sapphire, device="", isa_cap="AVX2")[0] == "float32"
    assert machine.choose_precision("auto", flags=sapphire, device="", isa_cap="avx512_core_amx")[0] == "mixed_bfloat16"
    assert machine.choose_precision("auto", flags=sapphire, device="", isa_cap="")[0] == "mixed_bfloat16"


def test_auto_keeps_float32_on_an_accelerator_and_an_explicit_choice_is_kept():
    sapphire = machine.cpu_flags(SAPPHIRE_RAPIDS)
    assert machine.choose_precision("auto", flags=sapphire, device="GPU") == ("float32", "auto: on the GPU")
    assert machine.choose_precision("mixed_bfloat16", flags=set(), device="") == ("mixed_bfloat16", "as asked")
    assert machine.choose_precision("float32", flags=sapphire, device="") == ("float32", "as asked")


def test_a_config_resolves_auto_for_this_machine(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(machine, "_cpuinfo", lambda: EPYC_AVX2)
    monkeypatch.setattr(machine, "accelerator", lambda: None)
    config, reason = TrainConfig().resolved()
    assert config.precision == "float32" and "no native bfloat16" in reason
    monkeypatch.setattr(machine, "_cpuinfo", lambda: SAPPHIRE_RAPIDS)
    assert TrainConfig().resolved()[0].precision == "mixed_bfloat16"
    assert TrainConfig(precision="float32").resolved() == (TrainConfig(precision="float32"), "as asked")


def test_the_machine_description_names_the_cpu_and_its_flags(monkeypatch):
    monkeypatch.setattr(machine, "_cpuinfo", lambda: SAPPHIRE_RAPIDS)
    description = machine.describe()
    assert description["cpu"] == "Intel(R) Xeon(R) Processor"
    assert description["cpu_flags"] == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"]
    assert description["backend"] in ("tensorflow", "jax") and description["keras"]


def test_importing_the_package_turns_on_tensorflows_onednn_kernels_unless_told_otherwise():
    # TensorFlow enables oneDNN only on AVX-512 VNNI and newer CPUs; on AVX2 its Eigen kernels train slower.
    def setting(**env):
        code = "import lstm_stn_tf, os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
        environment = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"} | env
        return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert setting() == "1"
    assert setting(TF_ENABLE_ONEDNN_OPTS="0") == "0"
    if keras.backend.backend() == "tensorflow":
        assert machine.describe()["tf_enable_onednn_opts"] == os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")


def test_named_recipes_set_their_values_and_overrides_win():
    fast = TrainConfig.from_recipe("fast", seed=2)
    assert (fast.recipe, fast.epochs, fast.schedule, fast.fresh_clutter) == ("fast", 20, "cosine", True)
    assert fast.model_options == {"cell_init": "lasagne"} and fast.seed == 2
    longer = TrainConfig.from_recipe("fast", epochs=60, model_options={"units": 128})
    assert longer.epochs == 60 and longer.model_options == {"cell_init": "lasagne", "units": 128}
    best = TrainConfig.from_recipe("best")
    assert (best.epochs, best.schedule, best.warmup_epochs, best.fresh_clutter) == (300, "step", 5, True)
    assert best.model_options == {"cell_init": "lasagne"}
    assert TrainConfig.from_recipe() == TrainConfig()
    with pytest.raises(ValueError, match="recipe='quick': expected one of protocol, fast, best"):
        TrainConfig.from_recipe("quick")


def test_the_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_epoch():
    config = TrainConfig(learning_rate=1e-3, warmup_epochs=2, schedule="cosine", epochs=12)
    rates = [config.learning_rate_at(epoch) for epoch in range(12)]
    assert rates[:3] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert rates[7] == pytest.approx(5e-4)  # half-way through the 10 epochs after the warm-up
    assert all(later < earlier for earlier, later in zip(rates[2:], rates[3:]))
    assert 0 < rates[-1] < 3e-5


def test_the_table_names_the_recipe_and_what_a_run_changed_beyond_it():
    fast = dataclasses.asdict(TrainConfig.from_recipe("fast", precision="mixed_bfloat16"))
    assert variant(fast) == "recipe fast, precision=mixed_bfloat16"
    assert variant(dict(fast, epochs=60, precision="float32")) == "recipe fast, epochs=60"
    # Results written before recipes existed have no recipe: the protocol's.
    old = {k: v for k, v in dataclasses.asdict(TrainConfig(precision="float32")).items() if k not in ("recipe", "schedule")}
    assert variant(old) == "protocol"
