"""Search-space files: every shipped file loads; every mistake fails early naming file and key;
the define-by-run space samples valid configs through real Optuna studies."""
from __future__ import annotations

import copy
import pickle
from pathlib import Path

import optuna
import pytest
import yaml

from cat_ray.config import ConfigError, load_yaml
from cat_ray.search_space import (
    DefineByRun,
    base_config,
    define_by_run,
    describe,
    grid_size,
    load_search_space,
    optuna_sampler,
    trial_config,
    tune_scheduler,
)

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SHIPPED = sorted(SPACES.glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _profiles(path: Path) -> list[str]:
    return list(load_yaml(path).get("profiles") or {})


@pytest.fixture
def offsets_tree() -> dict:
    return load_yaml(SPACES / "offsets.yaml")


@pytest.fixture
def write(tmp_path):
    """Write a (modified) search-space tree to a file and return its path."""
    def _write(tree: dict, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        return path
    return _write


def _error(path: Path, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_search_space(path, **kwargs)
    return info.value


# --------------------------------------------------------------------------- shipped files


def test_the_four_sweeps_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"offsets", "loss_weights", "learning_rate", "aggregators"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_file_loads_in_every_profile(path):
    for profile in _profiles(path):
        space = load_search_space(path, profile)
        assert space.name == path.stem and space.profile.name == profile
        assert space.search.num_samples >= 1 and space.objective.metrics == ("val_pa_mpjpe",)
        assert f"sweep {space.name}" in describe(space)
    assert load_search_space(path).profile.name == "laptop"  # the README's command needs no --profile


def test_offsets_file_holds_table_vii_and_its_laptop_profile_fits_ten_minutes():
    space = load_search_space(SPACES / "offsets.yaml")
    decoded = {trial_config(space, {"model.offsets": c, "train.seed": 0}).model.offsets
               for c in space.param("model.offsets").choices}
    table_vii = {(1, 0, -1), (-2, -1, 0, 1, 2), (-3, -2, -1, 0, 1, 2, 3), (2, 1, 0), (0, -1, -2),
                 (3, 2, 1, 0), (0, -1, -2, -3), (4, 3, 2, 1, 0), (0, -1, -2, -3, -4)}
    assert decoded == table_vii
    # Measured: 4 epochs x 40 steps at these sizes ran the 9 trials in 157 s on 2 shared cores, i.e.
    # < 60 s per trial with start-up; bound the steps so that the rounds stay well under 10 minutes.
    t = space.base.train
    rounds = -(-space.search.num_samples // space.search.max_concurrent)
    assert space.resources.per_trial["CPU"] * space.search.max_concurrent <= 2
    assert space.base.data.feature_dim <= 128 and t.epochs * t.iters_per_epoch <= 160 and rounds * 60 <= 600
    paper = load_search_space(SPACES / "offsets.yaml", "paper")
    assert (paper.base.train.epochs, paper.base.train.iters_per_epoch, paper.base.data.feature_dim) == (50, 500, 2048)
    assert paper.resources.gpus_per_worker == 1


def test_aggregators_file_is_a_grid_of_aggregator_cr_and_seed():
    space = load_search_space(SPACES / "aggregators.yaml")
    assert set(space.param("model.aggregator").choices) == {"confidence", "gru", "tcn", "average", "vibe", "single"}
    assert space.param("data.corruption.ratio").choices == (0.0, 0.33)
    assert space.base.data.corruption.mode == "center"
    assert space.search.sampler == "grid" and space.search.num_samples == grid_size(space) == 6 * 2 * 2


# --------------------------------------------------------------------------- errors name file and key


def _fails(write, tree, key, **kwargs):
    path = write(tree)
    err = _error(path, **kwargs)
    assert (err.source, err.key) == (str(path), key), str(err)
    return err


def test_unknown_keys_anywhere_fail(write, offsets_tree):
    for mutate, key in [
        (lambda t: t.update(serach={}), "serach"),
        (lambda t: t["base"].update(configs=None), "base.configs"),
        (lambda t: t["search"].update(num_sample=3), "search.num_sample"),
        (lambda t: t["params"]["train.seed"].update(hi=3), "params.train.seed.hi"),
        (lambda t: t["objective"].update(metrics="x"), "objective.metrics"),
        (lambda t: t.update(scheduler={"type": "asha", "grace": 1}), "scheduler.grace"),
        (lambda t: t["resources"].update(gpus=1), "resources.gpus"),
        (lambda t: t["profiles"]["paper"]["search"].update(max_concurent=2), "profiles.paper.search.max_concurent"),
        (lambda t: t["profiles"]["paper"].update(epochs=3), "profiles.paper.epochs"),
        (lambda t: t["profiles"]["paper"].update(scheduler={"type": "asha", "grace": 2}), "profiles.paper.scheduler.grace"),
        (lambda t: t["base"]["set"].update({"train.epoch": 3}), "base.set.train.epoch"),
        (lambda t: t["profiles"]["laptop"]["set"].update({"model.offset": "1,0"}), "profiles.laptop.set.model.offset"),
    ]:
        tree = copy.deepcopy(offsets_tree)
        mutate(tree)
        _fails(write, tree, key)


@pytest.mark.parametrize("spec,key,expected", [
    ({"type": "uniform", "low": 100.0}, "params.loss.w_3d.high", "bound is required"),
    ({"type": "uniform", "high": 100.0}, "params.loss.w_3d.low", "bound is required"),
    ({"type": "uniform", "low": 500.0, "high": 100.0}, "params.loss.w_3d.low", "low < high"),
    ({"type": "uniform", "low": 100.0, "high": 100.0}, "params.loss.w_3d.low", "low < high"),
    ({"type": "loguniform", "low": 0.0, "high": 100.0}, "params.loss.w_3d.low", "low > 0"),
    ({"type": "uniform", "low": -10.0, "high": 100.0}, "params.loss.w_3d.low", "non-negative weight"),
    ({"type": "normal", "low": 1.0, "high": 2.0}, "params.loss.w_3d.type", "categorical"),
    ({"type": "categorical", "choices": []}, "params.loss.w_3d.choices", "non-empty"),
    ({"type": "categorical", "choices": [1.0, 1.0]}, "params.loss.w_3d.choices[1]", "repeated"),
])
def test_bad_distributions_fail(write, offsets_tree, spec, key, expected):
    offsets_tree["params"]["loss.w_3d"] = spec
    assert expected in _fails(write, offsets_tree, key).expected


def test_param_that_is_not_a_config_key_fails(write, offsets_tree):
    offsets_tree["params"]["optim.learning_rate"] = {"type": "loguniform", "low": 1e-5, "high": 1e-3}
    assert "unknown key" in _fails(write, offsets_tree, "params.optim.learning_rate").expected
    del offsets_tree["params"]["optim.learning_rate"]
    offsets_tree["params"]["optim"] = {"type": "categorical", "choices": [1]}
    _fails(write, offsets_tree, "params.optim")


def test_distribution_of_the_wrong_kind_for_the_key_fails(write, offsets_tree):
    offsets_tree["params"]["train.epochs"] = {"type": "uniform", "low": 1.0, "high": 5.0}
    assert "int" in _fails(write, offsets_tree, "params.train.epochs.type").expected
    offsets_tree["params"]["train.epochs"] = {"type": "int", "low": 0, "high": 5}
    _fails(write, offsets_tree, "params.train.epochs.low")


@pytest.mark.parametrize("choice,why", [
    ("2,2,1", "duplicates"),
    ("", "non-empty"),
    ("-20..0", "window longer"),  # needs 20 frames before t; the window has 16
    ("1;0", "offsets like"),
    ([1, 0, -1], "scalar"),  # a list breaks Optuna's categorical; strings are the format
])
def test_offset_sets_the_model_refuses_fail(write, offsets_tree, choice, why):
    offsets_tree["params"]["model.offsets"]["choices"] = ["-2..2", choice]
    assert why in _fails(write, offsets_tree, "params.model.offsets.choices[1]").expected


def test_unknown_aggregator_fails(write):
    tree = load_yaml(SPACES / "aggregators.yaml")
    tree["params"]["model.aggregator"]["choices"].append("transformer")
    assert "one of confidence" in _fails(write, tree, "params.model.aggregator.choices[6]").expected


def test_metric_never_reported_fails(write, offsets_tree):
    offsets_tree["objective"]["metric"] = "val_pampjpe"
    assert "val_pa_mpjpe" in _fails(write, offsets_tree, "objective.metric").expected
    # Every Table VII set holds offset 0, not every set holds 2: only the first is reported by every trial.
    offsets_tree["objective"]["metric"] = "agg_weight_d2"
    _fails(write, offsets_tree, "objective.metric")
    offsets_tree["objective"]["metric"] = "agg_weight_d0"
    assert load_search_space(write(offsets_tree)).objective.metric == "agg_weight_d0"


def test_bad_objective_sampler_scheduler_and_resources_fail(write, offsets_tree):
    for section, value, key in [
        ("objective", {"metric": "val_pa_mpjpe", "mode": "minimize"}, "objective.mode"),
        ("objective", {"metric": ["val_pa_mpjpe", "agg_latency_ms"], "mode": ["min"] * 3}, "objective.mode"),
        ("search", {"sampler": "hyperopt"}, "search.sampler"),
        ("search", {"sampler": "tpe"}, "search.num_samples"),  # only a grid knows its own size
        ("search", {"sampler": "tpe", "num_samples": 4, "options": {"multivarate": True}}, "search.options.multivarate"),
        ("search", {"sampler": "grid", "max_concurrent": 0}, "search.max_concurrent"),
        ("scheduler", {"type": "pbt"}, "scheduler.type"),
        ("scheduler", {"type": "asha", "grace_period": 5}, "scheduler.grace_period"),  # laptop runs 4 epochs
        ("scheduler", {"type": "asha", "reduction_factor": 1}, "scheduler.reduction_factor"),
        ("resources", {"workers": 0}, "resources.workers"),
        ("resources", {"workers": 1, "gpus_per_worker": -1}, "resources.gpus_per_worker"),
        ("resources", {"workers": 1, "cpus_per_worker": "two"}, "resources.cpus_per_worker"),
        ("resources", {"workers": 3}, "resources.workers"),  # batch 16 does not split over 3 workers
    ]:
        tree = copy.deepcopy(offsets_tree)
        tree[section] = value
        _fails(write, tree, key)


def test_grid_needs_finite_params_and_at_most_its_size(write, offsets_tree):
    offsets_tree["params"]["optim.lr"] = {"type": "loguniform", "low": 1e-5, "high": 1e-3}
    assert "optim.lr is continuous" in _fails(write, offsets_tree, "search.sampler").expected
    path = SPACES / "offsets.yaml"
    err = _error(path, num_samples=10)
    assert (err.source, err.key) == ("--num-samples", "--num-samples") and "grid size 9" in err.expected
    assert load_search_space(path, num_samples=4, max_concurrent=1).search.num_samples == 4


def test_profiles_and_overrides_fail_by_name(write, offsets_tree):
    path = write(offsets_tree)
    assert _error(path, profile="cluster").key == "profiles"
    err = _error(path, overrides=["train.epoch=3"])
    assert (err.source, err.key) == ("--set", "train.epoch")
    err = _error(path, overrides=["model.offsets=1,0"])  # searched: fixing it too is ambiguous
    assert (err.source, err.key) == ("--set", "model.offsets")
    offsets_tree["default_profile"] = "desktop"
    _fails(write, offsets_tree, "default_profile")


def test_overrides_layer_profile_then_command_line(write, offsets_tree, tmp_path):
    (tmp_path / "small.yaml").write_text("train:\n  epochs: 7\n  eval_batch_size: 8\n")
    offsets_tree["base"]["config"] = "small.yaml"
    offsets_tree["base"]["set"]["train.iters_per_epoch"] = 11
    path = write(offsets_tree)
    space = load_search_space(path, "paper", overrides=["train.epochs=4"])
    t = space.base.train
    assert (t.eval_batch_size, t.iters_per_epoch, t.epochs) == (8, 500, 4)  # file <- base.set <- profile <- --set
    assert base_config(space) is space.base
    (tmp_path / "small.yaml").write_text("train:\n  epochs: zero\n")
    err = _error(path)
    assert (err.source, err.key) == (str(tmp_path / "small.yaml"), "train.epochs")


# --------------------------------------------------------------------------- use with real Optuna


def test_trial_config_decodes_offset_strings():
    space = load_search_space(SPACES / "offsets.yaml")
    cfg = trial_config(space, {"model.offsets": "0..-3", "train.seed": 0})
    assert cfg.model.offsets == (0, -1, -2, -3)
    assert cfg.train.epochs == 4 and cfg.model.aggregator == "confidence"
    with pytest.raises(ConfigError):
        trial_config(space, {"model.offsets": "0..-3"})  # a searched key missing


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_define_by_run_samples_valid_configs_in_a_real_study(path):
    space = load_search_space(path)
    study = optuna.create_study(sampler=optuna_sampler(space), directions=space.objective.directions)
    seen = []

    def objective(trial: optuna.Trial) -> float:
        define_by_run(space)(trial)
        cfg = trial_config(space, trial.params)
        seen.append(cfg)
        return float(cfg.train.seed) + cfg.optim.lr

    study.optimize(objective, n_trials=min(4, space.search.num_samples))
    assert len(seen) == min(4, space.search.num_samples)
    for trial, cfg in zip(study.trials, seen):
        for p in space.params:
            value = trial.params[p.key]
            if p.type == "categorical":
                assert value in p.choices
            else:
                assert p.low <= value <= p.high


def test_seeded_sampler_reproduces_the_same_sequence():
    space = load_search_space(SPACES / "loss_weights.yaml")

    def run() -> list[dict]:
        study = optuna.create_study(sampler=optuna_sampler(space))
        study.optimize(lambda t: (define_by_run(space)(t), t.params["loss.w_3d"])[1], n_trials=6)
        return [t.params for t in study.trials]

    first = run()
    assert first == run()
    assert len({round(p["loss.w_3d"], 6) for p in first}) == 6


def test_grid_runs_every_combination_once_through_ask_and_tell():
    # OptunaSearch asks for several trials before telling any; the last tell must not raise.
    space = load_search_space(SPACES / "aggregators.yaml")
    study = optuna.create_study(sampler=optuna_sampler(space))
    trials = [study.ask() for _ in range(space.search.num_samples)]
    combos = []
    for trial in trials:
        define_by_run(space)(trial)
        combos.append(tuple(trial.params[p.key] for p in space.params))
    for trial in trials:
        study.tell(trial, 1.0)
    assert len(set(combos)) == grid_size(space) == 24


def test_spec_objects_survive_plain_pickle():
    # OptunaSearch.save pickles its space and study (sampler included) with plain pickle.
    space = load_search_space(SPACES / "offsets.yaml")
    fn = pickle.loads(pickle.dumps(define_by_run(space)))
    assert isinstance(fn, DefineByRun) and fn.params == space.params
    pickle.loads(pickle.dumps(optuna_sampler(space)))
    assert pickle.loads(pickle.dumps(space)) == space


def test_multi_objective_parses_and_runs(write, offsets_tree):
    offsets_tree["objective"] = {"metric": ["val_pa_mpjpe", "agg_latency_ms"], "mode": "min"}
    offsets_tree["search"]["sampler"] = "nsga2"
    offsets_tree["search"]["num_samples"] = 6
    path = write(offsets_tree)
    space = load_search_space(path)
    obj = space.objective
    assert obj.is_multi and obj.metric == ["val_pa_mpjpe", "agg_latency_ms"] and obj.mode == ["min", "min"]
    study = optuna.create_study(sampler=optuna_sampler(space), directions=obj.directions)
    study.optimize(lambda t: (define_by_run(space)(t), (1.0, 2.0))[1], n_trials=3)
    assert len(study.best_trials) >= 1 and "Pareto" in describe(space)
    offsets_tree["scheduler"] = {"type": "asha"}
    _fails(write, offsets_tree, "scheduler")


def test_tune_scheduler_uses_epochs_and_the_objective():
    from ray.tune.schedulers import ASHAScheduler

    space = load_search_space(SPACES / "loss_weights.yaml")
    scheduler = tune_scheduler(space)
    assert isinstance(scheduler, ASHAScheduler)
    assert (scheduler._time_attr, scheduler._metric, scheduler._mode, scheduler._max_t) == ("epoch", "val_pa_mpjpe", "min", 3)
    assert tune_scheduler(load_search_space(SPACES / "offsets.yaml")) is None


def test_a_rule_between_keys_blames_the_override_that_breaks_it(write, offsets_tree):
    offsets_tree["base"]["set"]["model.offsets"] = "-20..0"  # searched anyway, but the base must be valid
    err = _fails(write, offsets_tree, "base.set.model.offsets")
    assert "data.seq_len" in err.expected
