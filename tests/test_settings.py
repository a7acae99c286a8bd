"""Declared settings: types, ranges, messages, every shipped config layer, and the CLI refusing bad
values (and an unwritable --out) before any data is loaded."""
import os

import pytest
import yaml

from zslfast import train
from zslfast.config import CONFIG_DIR, resolve_config
from zslfast.data.xlsa17 import DATASETS
from zslfast.errors import ZSLError
from zslfast.engine import METHODS, get_method
from zslfast.config.settings import Bool, Choice, File, Float, Int, Numbers, Section


def _error(spec, value):
    with pytest.raises(ZSLError) as info:
        spec.check(value, "key")
    return str(info.value)


def test_numbers_and_ranges():
    assert Int(min=1).check(3, "k") == 3
    assert Int(min=1).check(1e3, "k") == 1000 and isinstance(Int().check(1e3, "k"), int)  # --set n=1e3
    assert _error(Int(min=1), -1) == "setting key = -1: expected an integer >= 1"
    assert _error(Int(min=1), 2.5) == "setting key = 2.5: expected an integer >= 1"
    assert _error(Int(), True) == "setting key = True: expected an integer"  # bool is not an int here
    assert Float(min=0, min_open=True).check(3, "k") == 3.0
    assert _error(Float(min=0, min_open=True), 0) == "setting key = 0: expected a number > 0"
    assert _error(Float(min=0, min_open=True), "abc") == "setting key = 'abc': expected a number > 0"
    assert _error(Float(min=0, max=1), 1.5) == "setting key = 1.5: expected a number in [0, 1]"
    assert _error(Float(min=0, max=1, max_open=True), 1) == "setting key = 1: expected a number in [0, 1)"
    assert _error(Float(), float("nan")).startswith("setting key = nan: expected a number")
    assert Int(min=1, nullable=True).check(None, "k") is None
    assert _error(Int(min=1, nullable=True), 0) == "setting key = 0: expected an integer >= 1 or null"
    assert _error(Int(min=1), None) == "setting key = null: expected an integer >= 1"


def test_choices_booleans_files_and_lists(tmp_path):
    assert Choice("a", "b").check("b", "k") == "b"
    assert _error(Choice("a", "b"), "c") == "setting key = 'c': expected one of a, b"
    assert Bool().check(False, "k") is False
    assert _error(Bool(), 1) == "setting key = 1: expected true or false"
    f = tmp_path / "x.pt"
    f.write_bytes(b"")
    assert File().check(str(f), "k") == str(f)
    assert "existing file" in _error(File(), str(tmp_path / "missing.pt"))
    pair = Numbers(Float(min=0, max=1), length=2, increasing=True)
    assert pair.check([0, 0.5], "k") == [0.0, 0.5]
    for bad in ([0.5, 0.2], [0.1], [0.1, 2.0], "0.1,0.2"):
        assert _error(pair, bad).startswith("setting key = ")


def test_sections_name_the_full_key_and_refuse_unknown_or_missing_keys():
    spec = Section(a=Int(min=1), inner=Section(b=Choice("x", "y")),
                   checks=[lambda c: None if c["a"] < 10 else "a must stay below 10"])
    assert spec.validate({"a": 2, "inner": {"b": "x"}}) == {"a": 2, "inner": {"b": "x"}}
    with pytest.raises(ZSLError, match=r"^setting inner.b = 'z': expected one of x, y$"):
        spec.validate({"a": 2, "inner": {"b": "z"}})
    with pytest.raises(ZSLError, match=r"unknown setting 'inner.c'"):
        spec.validate({"a": 2, "inner": {"b": "x", "c": 1}})
    with pytest.raises(ZSLError, match=r"setting inner is missing"):
        spec.validate({"a": 2})
    with pytest.raises(ZSLError, match=r"a must stay below 10"):
        spec.validate({"a": 12, "inner": {"b": "x"}})


def _layers(method):
    with open(os.path.join(CONFIG_DIR, f"{method}.yaml")) as f:
        spec = yaml.safe_load(f)
    return sorted((spec.get("datasets") or {}))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_shipped_config_layer_satisfies_the_declaration(method):
    """Every dataset section, the synthetic and --like layers and the quick layer validate: the YAML
    and the declared settings list the same keys, with allowed values."""
    for dataset in ["synthetic", *DATASETS]:
        for quick in (False, True):
            resolve_config(method, dataset, quick=quick)
    for like in DATASETS:
        resolve_config(method, "synthetic", like=like)
    assert set(_layers(method)) <= {"synthetic", *DATASETS}


def test_like_runs_take_the_dataset_section_then_the_cpu_budget():
    cub = resolve_config("gsmflow", "CUB")
    like = resolve_config("gsmflow", "synthetic", like="CUB")
    generic = resolve_config("gsmflow", "synthetic")
    # the dataset's own hyper-parameters ...
    for key in ("weight_decay", "attributes"):
        assert like[key] == cub[key] != generic[key]
    # ... with the budget scaled to a CPU, which also replaces the flow regularisers (tuned for
    # 300-600 epochs) and the classifier's huge batches
    assert like["flow"]["hidden"] == 512 < cub["flow"]["hidden"] and like["flow"]["blocks"] == 3 < cub["flow"]["blocks"]
    assert like["epochs"] == 20 < cub["epochs"] and like["synth_ratio"] is not None
    assert (like["perturbation"], like["proto_weight"], like["lr"]) == (0.1, 3.0, 1e-3) != (cub["perturbation"],
                                                                                          cub["proto_weight"], cub["lr"])
    assert like["classifier"]["batch_size"] == 64 < cub["classifier"]["batch_size"]
    # an att_splits.mat path is named after its folder
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "CUB", "att_splits.mat")
    if os.path.isfile(path):
        assert resolve_config("gsmflow", "synthetic", like=path) == like
    else:
        assert os.environ.get("ZSLFAST_REQUIRE_DATA") != "1", f"ZSLFAST_REQUIRE_DATA=1 but {path} is missing"
    assert resolve_config("grw", "synthetic", like="CUB")["lsr"]["margin"] == 0.04  # GRW's CUB value



def test_scegg_presets_classify_in_batches_of_the_synthetic_count():
    """TF-VAEGAN (whose values SC-EGG's are, and CUB's / AWA2's presets come from) trains both final
    classifiers with batches of syn_num rows: SUN's released 400 / 400, and so 300 for CUB and 1800
    for AWA2 and AWA1."""
    for name in ("SUN", "CUB", "AWA2", "AWA1"):
        cfg = resolve_config("scegg", name)
        assert cfg["classifier"]["batch_size"] == cfg["synth_per_class"], name
    assert resolve_config("scegg", "CUB")["classifier"]["batch_size"] == 300
    assert "classifier.batch_size" in resolve_config("scegg", "AWA2")["from_tfvaegan"]


# SC-EGG's released settings (spec §1.7: config_sun.yaml and train_SUN.py's literals), written out
# here, not derived from the code: for any dataset but SUN, none of them was released.
SCEGG_RELEASED = ["batch_size", "epochs", "eval_every", "stage1.iterations", "stage1.lr", "stage1.weight_decay",
                  "stage1.momentum", "stage2.hidden", "stage2.iterations", "stage2.lr", "gan.hidden",
                  "gan.critic_iters", "gan.feedback_loops", "gan.lr", "gan.dec_lr", "gan.feed_lr", "gan.beta1",
                  "gan.gamma_d", "gan.gamma_g", "gan.lambda_gp", "gan.recons_weight", "gan.seen_cls_weight",
                  "gan.unseen_cls_weight", "gan.a1", "gan.a2", "gan.freeze_dec", "gan.encoded_noise",
                  "synth_per_class", "classifier.lr", "classifier.epochs", "classifier.batch_size"]


def test_scegg_not_released_lists_every_guessed_value():
    """Every preset but SUN's is a guess: results.json's ``info.not_released`` (what
    :func:`zslfast.models.scegg.not_released` reports) names every released setting, the SUN
    values carried over (a1, a2, stages 1/2, CE weights, batch, classifier epochs) included, and
    the TF-VAEGAN-derived ones are a subset; SUN's lists nothing."""
    from zslfast.models.scegg import not_released

    assert not_released(resolve_config("scegg", "SUN")) == []
    for name in ("CUB", "AWA2", "AWA1", "APY", "FLO"):
        cfg = resolve_config("scegg", name)
        listed = set(not_released(cfg))
        assert set(SCEGG_RELEASED) <= listed, (name, set(SCEGG_RELEASED) - listed)
        assert set(cfg["from_tfvaegan"]) <= listed
    assert {"gan.lr", "synth_per_class"} <= set(resolve_config("scegg", "CUB")["from_tfvaegan"])


def test_a_per_dataset_budget_comes_after_the_common_one(tmp_path, monkeypatch):
    """cpu_budget.datasets.NAME is applied after cpu_budget, for --like NAME only (and
    cpu_budget.datasets.synthetic for the built-in data only): SC-EGG's AWA2-like runs keep AWA2's own
    GAN values, CUB-like runs take SUN's released ones."""
    awa2, cub, sun = (resolve_config("scegg", "synthetic", like=n) for n in ("AWA2", "CUB", "SUN"))
    own = resolve_config("scegg", "AWA2")["gan"]
    for key in ("lr", "gamma_d", "gamma_g", "recons_weight", "freeze_dec"):
        assert awa2["gan"][key] == own[key] != sun["gan"][key]
    assert (awa2["epochs"], awa2["eval_every"], awa2["gan"]["hidden"]) == (10, 1, 1024)
    assert {k: cub["gan"][k] for k in ("lr", "gamma_d", "gamma_g")} == {k: sun["gan"][k] for k in ("lr", "gamma_d", "gamma_g")}
    assert resolve_config("scegg", "synthetic", like="CUB")["gan"]["feed_lr"] == resolve_config("scegg", "CUB")["gan"]["feed_lr"]
    # every --like run keeps the released stage 2 (the common budget leaves it alone); AWA2-like
    # weighs the head's CE on generated unseen features by 1 (chosen on validation), the others keep
    # SUN's released 0.001
    assert awa2["stage2"] == resolve_config("scegg", "SUN")["stage2"] == cub["stage2"] == sun["stage2"]
    assert awa2["stage1"] == cub["stage1"] != resolve_config("scegg", "SUN")["stage1"]
    assert awa2["gan"]["unseen_cls_weight"] == 1.0 != cub["gan"]["unseen_cls_weight"] == sun["gan"]["unseen_cls_weight"] == 0.001
    assert own["unseen_cls_weight"] == 0.001  # the full AWA2 preset keeps SUN's released weight
    # the built-in data: the common budget, then its own entry (a CPU-sized stage 2 where the common
    # budget keeps the released one, and the main job's 10 GAN epochs)
    builtin = resolve_config("scegg", "synthetic")
    assert (builtin["epochs"], builtin["stage2"]["iterations"], builtin["gan"]["hidden"]) == (10, 600, 1024)
    assert awa2["stage2"]["iterations"] != 600
    assert builtin["stage1"] == awa2["stage1"] and awa2["epochs"] == 10
    # a typo inside a per-dataset budget is refused like any other unknown key
    spec = yaml.safe_load(open(os.path.join(CONFIG_DIR, "scegg.yaml")))
    spec["cpu_budget"]["datasets"]["AWA2"]["gan"] = {"lrr": 1.0}
    (tmp_path / "scegg.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setattr("zslfast.config.CONFIG_DIR", str(tmp_path))
    with pytest.raises(ZSLError, match=r"cpu_budget.datasets.AWA2.*unknown setting 'gan.lrr'"):
        resolve_config("scegg", "synthetic", like="AWA2")


BAD_CASES = [
    (["--method", "gsmflow", "--set", "lr=abc"], "setting lr = 'abc': expected a number > 0"),
    (["--method", "grw", "--set", "epochs=-1"], "setting epochs = -1: expected an integer >= 1"),
    (["--method", "cvc", "--set", "epochs=0"], "setting epochs = 0: expected an integer >= 1"),
    (["--method", "gsmflow", "--set", "batch_size=0"], "setting batch_size = 0: expected an integer >= 1"),
    (["--method", "gsmflow", "--set", "synth_per_class=0"], "setting synth_per_class = 0: expected an integer in [1, 1000000]"),
    (["--method", "gsmflow", "--set", "synth_ratio=-2"], "setting synth_ratio = -2"),
    (["--method", "grw", "--set", "rw.decay=x"], "setting rw.decay = 'x'"),
    (["--method", "cvc", "--set", "inductive_checkpoint=/no/such.pt"], "setting inductive_checkpoint"),
    (["--method", "eszsl", "--set", "select_metric=mAP"], "expected one of zsl_t1, gzsl_h"),
    (["--method", "gsmflow", "--set", "eval_start=1000"], "nothing would be evaluated"),
    (["--out", "/proc/zslfast-cannot-write-here"], "--out /proc/zslfast-cannot-write-here: cannot write there"),
]


@pytest.mark.parametrize("args,message", BAD_CASES, ids=[" ".join(a) for a, _ in BAD_CASES])
def test_bad_values_exit_2_with_one_line_before_any_data_is_loaded(args, message, tmp_path, monkeypatch, capsys):
    def no_data(*a, **k):
        raise AssertionError("data was loaded before the settings were checked")

    monkeypatch.setattr(train, "load_data", no_data)
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    assert train.main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zslfast: error: ") and message in err[0], err
    assert not (tmp_path / "out" / "results.json").exists()


def test_every_method_declares_its_settings():
    for name in METHODS:
        assert isinstance(get_method(name).settings, Section), name


def test_print_config_names_the_file_line_and_layer_of_every_value(tmp_path, monkeypatch, capsys):
    """--print-config exits 0 before any data is loaded and prints every resolved value with the
    layer that set it last; a YAML layer's line is the line of the key in that file."""
    def no_data(*a, **k):
        raise AssertionError("--print-config loaded data")

    monkeypatch.setattr(train, "load_data", no_data)
    user = tmp_path / "mine.yaml"
    user.write_text("# my settings\ngan:\n  critic_iters: 3\n")
    args = ["--method", "scegg", "--like", "AWA2", "--config", str(user), "--set", "gan.lr=2e-4", "--print-config"]
    assert train.main(args) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert printed == resolve_config("scegg", "synthetic", str(user), ["gan.lr=2e-4"], like="AWA2")
    comments = {}
    path = ()
    for line in out.splitlines()[1:]:
        depth = (len(line) - len(line.lstrip())) // 2
        key = line.strip().split(":")[0]
        path = path[:depth] + (key,)
        if "  # " in line:
            comments[".".join(path)] = line.split("  # ", 1)[1]
    assert set(comments) == {k for k in _leaves(printed)}
    yaml_lines = open(os.path.join(CONFIG_DIR, "scegg.yaml")).read().splitlines()

    def at(key, layer):
        """The key's line in scegg.yaml, read from the comment, holds the key, and the layer is named."""
        where, _, named = comments[key].partition(" ")
        file, line = where.rsplit(":", 1)
        assert file == "zslfast/config/methods/scegg.yaml" and named == f"({layer})", comments[key]
        assert key.split(".")[-1] + ":" in yaml_lines[int(line) - 1], (key, yaml_lines[int(line) - 1])

    at("eval_every", "cpu_budget.datasets.AWA2")        # set in 3 layers; the last one wins
    at("gan.hidden", "cpu_budget")
    at("gan.gamma_d", "datasets.AWA2")
    at("gan.beta1", "defaults")
    assert comments["gan.lr"] == "--set gan.lr=2e-4"
    assert comments["gan.critic_iters"] == f"{user}:3 (--config)"
    assert comments["validation.seed"] == "shared block 'validation', zslfast/config/settings.py"
    old_name = tmp_path / "old.yaml"  # an old name is reported under its shared name, at its own line
    old_name.write_text("epochs: 30\nstep_size: 2\n")
    sources = {}
    assert resolve_config("gsmflow", config_file=str(old_name), sources=sources)["lr_step"] == 2
    assert sources["lr_step"] == f"{old_name}:2 (--config)" and sources["epochs"] == f"{old_name}:1 (--config)"


def _leaves(mapping, prefix=""):
    for k, v in mapping.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield prefix + k
