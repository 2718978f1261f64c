"""Search-space files (``search_spaces/*.yaml``) -> a validated, typed sweep specification.

A file names a base config with dotted overrides, scale profiles (laptop / paper), the searched
parameters and their distributions, the objective, the Optuna sampler, an optional Tune scheduler
and the resources of one trial (format: ``search_spaces/offsets.yaml`` and the README).
:func:`load_search_space` checks everything (every key, every bound, every categorical choice
against the config, the objective against the metrics a trial reports) before Ray starts, and
raises :class:`cat_ray.config.ConfigError` naming the file and the YAML key.

The Tune driver consumes the result: :func:`define_by_run` for ``OptunaSearch(space=...)``,
:func:`optuna_sampler`, :func:`tune_scheduler`, :func:`trial_config` inside a trial.
Importing this module imports Optuna and the training loop (torch), not Ray.
"""
from __future__ import annotations

import importlib.util
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import optuna

from cat_ray.config import (
    Config,
    ConfigError,
    build_config,
    config_to_dict,
    flatten,
    load_yaml,
    parse_override,
    set_dotted,
)
from cat_ray.train_loop import reported_metric_names

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler

PARAM_TYPES = ("categorical", "uniform", "loguniform", "int")
MODES = ("min", "max")
# name -> optuna.samplers class name; nsga2 and cmaes are Optuna's evolutionary samplers.
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler",
            "nsga2": "NSGAIISampler", "cmaes": "CmaEsSampler"}
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "random", "grid", "nsga2")
SCHEDULERS = ("asha", "median", "hyperband")
# Tune's training_iteration restarts at 1 after a restore; trials report `epoch`, which does not.
TIME_ATTR = "epoch"
DEFAULT_METRIC = "val_pa_mpjpe"

_TOP_KEYS = ("name", "description", "base", "params", "objective", "search", "scheduler", "resources",
             "profiles", "default_profile")
_BASE_KEYS = ("config", "set")
_PROFILE_KEYS = ("set", "params", "search", "scheduler", "resources")
_OBJECTIVE_KEYS = ("metric", "mode")
_SEARCH_KEYS = ("sampler", "seed", "num_samples", "max_concurrent", "options")
_RESOURCE_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker")
_PARAM_KEYS = {"categorical": ("type", "choices"), "uniform": ("type", "low", "high"),
               "loguniform": ("type", "low", "high"), "int": ("type", "low", "high", "step", "log")}
_SCHEDULER_KEYS = {"asha": ("type", "grace_period", "reduction_factor", "max_t"),
                   "median": ("type", "grace_period", "min_samples_required"),
                   "hyperband": ("type", "reduction_factor", "max_t")}


# --------------------------------------------------------------------------- the specification


@dataclass(frozen=True)
class ParamSpec:
    """One searched config key and its distribution."""

    key: str  # dotted config key, also the Optuna parameter name and the MLflow param name
    type: str  # one of PARAM_TYPES
    choices: tuple[Any, ...] = ()  # categorical: None/bool/int/float/str (offset sets as "-2..2")
    low: float | int | None = None
    high: float | int | None = None
    step: int = 1  # int only
    log: bool = False  # int only (loguniform is its own type)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for this parameter's value (define-by-run)."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=self.step, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.type == "loguniform")

    def grid_values(self) -> tuple[Any, ...] | None:
        """Every value a grid enumerates: the choices, or the integer range; None for a continuum."""
        if self.type == "categorical":
            return self.choices
        if self.type == "int" and not self.log:
            return tuple(range(int(self.low), int(self.high) + 1, self.step))
        return None

    def describe(self) -> str:
        if self.type == "categorical":
            return f"{self.key} ~ categorical {{{', '.join(map(_show, self.choices))}}}"
        if self.type == "int":
            extra = (f", step {self.step}" if self.step != 1 else "") + (", log" if self.log else "")
            return f"{self.key} ~ int [{self.low}, {self.high}]{extra}"
        return f"{self.key} ~ {self.type} [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Objective:
    """The metric(s) Tune and Optuna optimise; two or more metrics make a multi-objective (Pareto) search."""

    metrics: tuple[str, ...] = (DEFAULT_METRIC,)
    modes: tuple[str, ...] = ("min",)

    @property
    def is_multi(self) -> bool:
        return len(self.metrics) > 1

    @property
    def metric(self) -> str | list[str]:
        """In the form ``OptunaSearch(metric=...)`` takes: a name, or a list for multi-objective."""
        return list(self.metrics) if self.is_multi else self.metrics[0]

    @property
    def mode(self) -> str | list[str]:
        return list(self.modes) if self.is_multi else self.modes[0]

    @property
    def directions(self) -> list[str]:
        """Optuna's study directions."""
        return ["minimize" if m == "min" else "maximize" for m in self.modes]


@dataclass(frozen=True)
class SearchSettings:
    sampler: str = "tpe"  # one of SAMPLERS
    seed: int = 0
    num_samples: int = 1  # trials; a grid's default is its size
    max_concurrent: int = 1  # trials at once (= cluster GPUs // GPUs per trial on a cluster)
    options: tuple[tuple[str, Any], ...] = ()  # extra keyword arguments of the Optuna sampler


@dataclass(frozen=True)
class SchedulerSpec:
    """A Tune trial scheduler that stops bad trials early; time is measured in epochs (TIME_ATTR)."""

    type: str  # one of SCHEDULERS
    grace_period: int = 1  # asha, median: epochs before a trial may be stopped
    reduction_factor: float = 2.0  # asha, hyperband
    max_t: int = 1  # asha, hyperband: defaults to train.epochs
    min_samples_required: int = 3  # median: trials to compare against


@dataclass(frozen=True)
class Resources:
    """What one trial asks for: a Ray Train worker group."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    @property
    def per_trial(self) -> dict[str, float]:
        return {"CPU": self.workers * self.cpus_per_worker, "GPU": self.workers * self.gpus_per_worker}


@dataclass(frozen=True)
class Profile:
    """The scale profile a space was loaded with, and the config overrides it applied."""

    name: str
    set: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class SearchSpace:
    source: str  # the YAML file
    name: str  # MLflow experiment name
    description: str
    profile: Profile | None
    profiles: tuple[str, ...]  # every profile the file offers
    config_file: str | None  # base config YAML, resolved
    overrides: tuple[tuple[str, Any], ...]  # dotted overrides applied to the base, in order (file, profile, --set)
    base: Config
    params: tuple[ParamSpec, ...]
    objective: Objective
    search: SearchSettings
    scheduler: SchedulerSpec | None
    resources: Resources

    def param(self, key: str) -> ParamSpec:
        return next(p for p in self.params if p.key == key)


# --------------------------------------------------------------------------- loading


def load_search_space(path: str | Path, profile: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                      *, num_samples: int | None = None, max_concurrent: int | None = None) -> SearchSpace:
    """Read and validate a search-space file.

    ``profile`` picks a scale profile (default: the file's ``default_profile``); ``overrides`` are
    ``--set key=value`` config overrides applied last; ``num_samples`` / ``max_concurrent`` replace
    the file's (command-line options). Raises ConfigError naming the file and key on any mistake.
    """
    path = Path(path)
    src = str(path)
    tree = load_yaml(path)
    _known(tree, _TOP_KEYS, src, "")

    base = _mapping(tree.get("base"), src, "base")
    _known(base, _BASE_KEYS, src, "base.")
    profiles = _mapping(tree.get("profiles"), src, "profiles")
    for pname, pbody in profiles.items():
        _check_profile_shape(pbody, src, f"profiles.{pname}")
    chosen = _choose_profile(tree, profiles, profile, src)
    overlay = _mapping(profiles[chosen], src, f"profiles.{chosen}") if chosen else {}
    pfx = f"profiles.{chosen}." if chosen else ""

    # Config: defaults <- base.config <- base.set <- profile.set <- --set.
    config_file = _config_path(base.get("config"), path, src)
    sets = [(src, f"base.set.{k}", k, v) for k, v in _mapping(base.get("set"), src, "base.set").items()]
    sets += [(src, f"{pfx}set.{k}", k, v) for k, v in _mapping(overlay.get("set"), src, f"{pfx}set").items()]
    sets += [("--set", k, k, v) for k, v in (parse_override(o) for o in overrides)]
    base_cfg = _base_config(config_file, sets)

    param_trees = {k: (v, f"params.{k}") for k, v in _mapping(tree.get("params"), src, "params").items()}
    param_trees.update({k: (v, f"{pfx}params.{k}") for k, v in _mapping(overlay.get("params"), src, f"{pfx}params").items()})
    if not param_trees:
        raise ConfigError(src, "params", "at least one searched parameter, e.g. optim.lr: {type: loguniform, low: 1.0e-5, high: 1.0e-3}")
    params = tuple(_param(key, body, src, where) for key, (body, where) in param_trees.items())
    for source, _yaml_key, key, _value in sets:
        if source == "--set" and key in param_trees:
            raise ConfigError("--set", key, f"is searched by {src} ({param_trees[key][1]}); it cannot also be fixed")

    metrics_seen = _check_params_against_config(params, param_trees, base_cfg, src)
    objective = _objective(_mapping(tree.get("objective"), src, "objective"), metrics_seen, src)

    search_tree, search_where = _overlay(tree, overlay, "search", pfx, src)
    if num_samples is not None:
        search_tree["num_samples"], search_where["num_samples"] = num_samples, "--num-samples"
    if max_concurrent is not None:
        search_tree["max_concurrent"], search_where["max_concurrent"] = max_concurrent, "--max-concurrent"
    search = _search(search_tree, search_where, params, objective, src)

    if "scheduler" in overlay:
        scheduler_tree, scheduler_key = overlay["scheduler"], f"{pfx}scheduler"
    else:
        scheduler_tree, scheduler_key = tree.get("scheduler"), "scheduler"
    scheduler = _scheduler(scheduler_tree, scheduler_key, base_cfg, objective, src)

    resources_tree, resources_where = _overlay(tree, overlay, "resources", pfx, src)
    resources = _resources(resources_tree, resources_where, src)
    _check_batch_split(base_cfg, params, resources, src, resources_where.get("workers", "resources.workers"))

    name = tree.get("name", path.stem)
    description = tree.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str) or (key == "name" and not value.strip()):
            raise ConfigError(src, key, f"a string; got {value!r}")
    return SearchSpace(
        source=src, name=name, description=description.strip(),
        profile=Profile(chosen, tuple((k, v) for s, y, k, v in sets if y.startswith(pfx) and s == src)) if chosen else None,
        profiles=tuple(profiles), config_file=str(config_file) if config_file else None,
        overrides=tuple((k, v) for _s, _y, k, v in sets), base=base_cfg, params=params, objective=objective,
        search=search, scheduler=scheduler, resources=resources)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _mapping(value: Any, src: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(src, key, f"a mapping; got {value!r}")
    return value


def _known(tree: Mapping[str, Any], allowed: tuple[str, ...], src: str, prefix: str) -> None:
    unknown = [k for k in tree if k not in allowed]
    if unknown:
        raise ConfigError(src, f"{prefix}{unknown[0]}", f"unknown key; valid keys here: {', '.join(allowed)}")


def _check_profile_shape(body: Any, src: str, key: str) -> None:
    """Unknown keys in any profile fail, not only in the one chosen."""
    body = _mapping(body, src, key)
    _known(body, _PROFILE_KEYS, src, key + ".")
    _known(_mapping(body.get("search"), src, key + ".search"), _SEARCH_KEYS, src, key + ".search.")
    _known(_mapping(body.get("resources"), src, key + ".resources"), _RESOURCE_KEYS, src, key + ".resources.")
    for pkey, pbody in _mapping(body.get("params"), src, key + ".params").items():
        _param(pkey, pbody, src, f"{key}.params.{pkey}")
    scheduler = _mapping(body.get("scheduler"), src, key + ".scheduler")
    if scheduler.get("type") in SCHEDULERS:
        _known(scheduler, _SCHEDULER_KEYS[scheduler["type"]], src, key + ".scheduler.")


def _choose_profile(tree: dict[str, Any], profiles: dict[str, Any], profile: str | None, src: str) -> str | None:
    default = tree.get("default_profile")
    if not profiles:
        if default is not None:
            raise ConfigError(src, "default_profile", "a profile named under 'profiles', but the file has none")
        if profile is not None:
            raise ConfigError(src, "profiles", f"a profile named {profile!r}, but the file defines no profiles")
        return None
    if default is not None and default not in profiles:
        raise ConfigError(src, "default_profile", f"one of {', '.join(profiles)}; got {default!r}")
    chosen = profile if profile is not None else (default or next(iter(profiles)))
    if chosen not in profiles:
        raise ConfigError(src, "profiles", f"a profile named {chosen!r}; this file has {', '.join(profiles)}")
    return chosen


def _config_path(value: Any, path: Path, src: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(src, "base.config", f"a config file path relative to this file, or null; got {value!r}")
    config_file = (path.parent / value).resolve()
    if not config_file.is_file():
        raise ConfigError(src, "base.config", f"an existing config file; {config_file} not found")
    return config_file


def _base_config(config_file: Path | None, sets: list[tuple[str, str, str, Any]]) -> Config:
    """Build the base config, blaming the YAML key (or --set) that a config error comes from."""
    tree = load_yaml(config_file) if config_file else {}
    build_config(tree, source=str(config_file) if config_file else None)  # the file alone, errors name it
    origin: dict[str, tuple[str, str]] = {}
    for source, yaml_key, key, value in sets:
        try:
            set_dotted(tree, key, value, source)
        except ConfigError as err:
            raise ConfigError(source, yaml_key, err.expected) from None
        origin[key] = (source, yaml_key)
    try:
        return build_config(tree)
    except ConfigError as err:
        if err.key in origin:
            raise ConfigError(origin[err.key][0], origin[err.key][1], err.expected) from None
        # A rule between keys (offsets longer than the window): blame the first override that breaks it.
        blamed = next(s for n, s in enumerate(sets, 1) if not _builds(config_file, sets[:n]))
        raise ConfigError(blamed[0], blamed[1], f"the resulting config is refused at {err.key}: {err.expected}") from None


def _builds(config_file: Path | None, sets: list[tuple[str, str, str, Any]]) -> bool:
    tree = load_yaml(config_file) if config_file else {}
    for _source, _yaml_key, key, value in sets:
        set_dotted(tree, key, value)
    try:
        build_config(tree)
    except ConfigError:
        return False
    return True


def _number(body: dict[str, Any], name: str, src: str, where: str, *, integer: bool = False) -> Any:
    if name not in body or body[name] is None:
        raise ConfigError(src, f"{where}.{name}", "a bound is required")
    value = body[name]
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(src, f"{where}.{name}", f"{'an integer' if integer else 'a finite number'}; got {value!r}")
    return value


def _param(key: str, body: Any, src: str, where: str) -> ParamSpec:
    """Parse one distribution (shape and bounds only; the config's view comes later)."""
    body = _mapping(body, src, where)
    ptype = body.get("type")
    if ptype not in PARAM_TYPES:
        raise ConfigError(src, f"{where}.type", f"one of {', '.join(PARAM_TYPES)}; got {ptype!r}")
    _known(body, _PARAM_KEYS[ptype], src, where + ".")
    if ptype == "categorical":
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(src, f"{where}.choices", "a non-empty list of values")
        for i, choice in enumerate(choices):
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                raise ConfigError(src, f"{where}.choices[{i}]",
                                  f'a scalar (None, bool, number or string; offset sets as strings like "-2..2"); got {choice!r}')
            if choice in choices[:i]:
                raise ConfigError(src, f"{where}.choices[{i}]", f"distinct choices; {choice!r} is repeated")
        return ParamSpec(key, ptype, choices=tuple(choices))
    integer = ptype == "int"
    low, high = _number(body, "low", src, where, integer=integer), _number(body, "high", src, where, integer=integer)
    if low >= high:
        raise ConfigError(src, f"{where}.low", f"low < high; got low {low}, high {high}")
    if ptype == "loguniform" and low <= 0:
        raise ConfigError(src, f"{where}.low", f"low > 0 for a log-uniform distribution; got {low}")
    if not integer:
        return ParamSpec(key, ptype, low=float(low), high=float(high))
    step = body.get("step", 1)
    log = body.get("log", False)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ConfigError(src, f"{where}.step", f"a positive integer; got {step!r}")
    if not isinstance(log, bool):
        raise ConfigError(src, f"{where}.log", f"true or false; got {log!r}")
    if log and (step != 1 or low < 1):
        raise ConfigError(src, f"{where}.log", "log: true needs step 1 and low >= 1 (Optuna's rule)")
    return ParamSpec(key, ptype, low=low, high=high, step=step, log=log)


def _check_params_against_config(params: tuple[ParamSpec, ...], trees: dict[str, tuple[Any, str]],
                                 base: Config, src: str) -> set[str]:
    """Each param must be a config key, and every value it can take must give a config the model accepts.

    Returns the metrics that every such config reports (the objective must be among them).
    """
    defaults = flatten(config_to_dict(base))
    metrics = reported_metric_names(base)
    for p in params:
        where = trees[p.key][1]
        try:
            set_dotted({}, p.key, None, src)
        except ConfigError as err:
            raise ConfigError(src, where, f"a config key to search: {err.expected}") from None
        if p.type in ("uniform", "loguniform") and not isinstance(defaults[p.key], float):
            raise ConfigError(src, f"{where}.type",
                              f"{p.key} takes {type(defaults[p.key]).__name__} values; use int or categorical")
        if p.type == "int" and not isinstance(defaults[p.key], (int, float)):
            raise ConfigError(src, f"{where}.type", f"{p.key} takes {type(defaults[p.key]).__name__} values; use categorical")
        probes = ([(f"{where}.choices[{i}]", c) for i, c in enumerate(p.choices)] if p.type == "categorical"
                  else [(f"{where}.low", p.low), (f"{where}.high", p.high)])
        for yaml_key, value in probes:
            try:
                cfg = _apply(base, {p.key: value})
            except ConfigError as err:
                raise ConfigError(src, yaml_key, f"{_show(value)} is refused by the config ({err.key}): {err.expected}") from None
            metrics &= reported_metric_names(cfg)
    return metrics


def _apply(base: Config, values: Mapping[str, Any], source: str | None = None) -> Config:
    tree = config_to_dict(base)
    for key, value in values.items():
        set_dotted(tree, key, value, source)
    return build_config(tree, source=source)


def _objective(body: dict[str, Any], reported: set[str], src: str) -> Objective:
    _known(body, _OBJECTIVE_KEYS, src, "objective.")
    metric = body.get("metric", DEFAULT_METRIC)
    metrics = metric if isinstance(metric, list) else [metric]
    if not metrics or not all(isinstance(m, str) for m in metrics) or len(set(metrics)) != len(metrics):
        raise ConfigError(src, "objective.metric", f"a metric name or a list of distinct names; got {metric!r}")
    for m in metrics:
        if m not in reported:
            raise ConfigError(src, "objective.metric", f"a metric every trial reports ({', '.join(sorted(reported))}); got {m!r}")
    mode = body.get("mode", "min")
    modes = mode if isinstance(mode, list) else [mode] * len(metrics)
    if len(modes) != len(metrics):
        raise ConfigError(src, "objective.mode", f"one mode, or one per metric ({len(metrics)}); got {mode!r}")
    for m in modes:
        if m not in MODES:
            raise ConfigError(src, "objective.mode", f"min or max; got {m!r}")
    return Objective(tuple(metrics), tuple(modes))


def _overlay(tree: dict[str, Any], overlay: dict[str, Any], section: str, pfx: str,
             src: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge a section with the profile's partial one; remember which YAML key each value came from."""
    top = _mapping(tree.get(section), src, section)
    over = _mapping(overlay.get(section), src, f"{pfx}{section}")
    keys = _SEARCH_KEYS if section == "search" else _RESOURCE_KEYS
    _known(top, keys, src, section + ".")
    where = {k: f"{section}.{k}" for k in top} | {k: f"{pfx}{section}.{k}" for k in over}
    return top | over, where


def _integer(tree: dict[str, Any], where: dict[str, str], key: str, section: str, src: str,
             default: Any, minimum: int) -> Any:
    value = tree.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        yaml_key = where.get(key, f"{section}.{key}")
        raise ConfigError(_source(yaml_key, src), yaml_key, f"an integer >= {minimum}; got {value!r}")
    return value


def _source(yaml_key: str, src: str) -> str:
    """Command-line options (``--num-samples``) are their own source."""
    return yaml_key if yaml_key.startswith("--") else src


def _search(tree: dict[str, Any], where: dict[str, str], params: tuple[ParamSpec, ...], objective: Objective,
            src: str) -> SearchSettings:
    sampler = tree.get("sampler", "tpe")
    key = where.get("sampler", "search.sampler")
    if sampler not in SAMPLERS:
        raise ConfigError(src, key, f"one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if objective.is_multi and sampler not in MULTI_OBJECTIVE_SAMPLERS:
        raise ConfigError(src, key, f"a multi-objective sampler ({', '.join(MULTI_OBJECTIVE_SAMPLERS)}); {sampler} optimises one metric")
    if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise ConfigError(src, key, "the cmaes package for sampler cmaes (pip install cmaes)")
    seed = _integer(tree, where, "seed", "search", src, 0, 0)
    size = None
    if sampler == "grid":
        size = grid_size(params)
        if size is None:
            continuous = next(p.key for p in params if p.grid_values() is None)
            raise ConfigError(src, key, f"a sampler other than grid: {continuous} is continuous (a grid needs categorical or int params)")
    num_samples = _integer(tree, where, "num_samples", "search", src, size, 1)
    if size is not None and num_samples > size:
        raise ConfigError(_source(where["num_samples"], src), where["num_samples"],
                          f"at most the grid size {size}; got {num_samples}")
    max_concurrent = _integer(tree, where, "max_concurrent", "search", src, 1, 1)
    options = _mapping(tree.get("options"), src, where.get("options", "search.options"))
    settings = SearchSettings(sampler, seed, num_samples, max_concurrent, tuple(sorted(options.items())))
    cls = _sampler_class(sampler)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "seed", "search_space"}
    options_key = where.get("options", "search.options")
    for name in options:
        if name not in accepted:
            raise ConfigError(src, f"{options_key}.{name}", f"an option of optuna.samplers.{cls.__name__}: {', '.join(sorted(accepted))}")
    try:
        _make_sampler(settings, params)
    except (TypeError, ValueError) as err:
        raise ConfigError(src, options_key, f"options optuna.samplers.{cls.__name__} accepts: {err}") from None
    return settings


def _scheduler(body: Any, key: str, base: Config, objective: Objective, src: str) -> SchedulerSpec | None:
    if body is None:
        return None
    body = _mapping(body, src, key)
    stype = body.get("type")
    if stype not in SCHEDULERS:
        raise ConfigError(src, f"{key}.type", f"one of {', '.join(SCHEDULERS)} (or scheduler: null); got {stype!r}")
    _known(body, _SCHEDULER_KEYS[stype], src, key + ".")
    if objective.is_multi:
        raise ConfigError(src, key, "null for a multi-objective search (a Tune scheduler ranks trials by one metric)")
    where = {k: f"{key}.{k}" for k in body}
    epochs = base.train.epochs
    grace = _integer(body, where, "grace_period", key, src, 1, 1)
    max_t = _integer(body, where, "max_t", key, src, epochs, 1)
    min_samples = _integer(body, where, "min_samples_required", key, src, 3, 1)
    factor = body.get("reduction_factor", 2)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 1:
        raise ConfigError(src, f"{key}.reduction_factor", f"a number > 1; got {factor!r}")
    if grace >= min(max_t, epochs):
        raise ConfigError(src, f"{key}.grace_period",
                          f"fewer epochs than a trial runs ({min(max_t, epochs)}, train.epochs / max_t) so that a trial can be stopped; got {grace}")
    return SchedulerSpec(stype, grace, float(factor), max_t, min_samples)


def _resources(tree: dict[str, Any], where: dict[str, str], src: str) -> Resources:
    workers = _integer(tree, where, "workers", "resources", src, 1, 1)
    amounts = {}
    for name, default in (("cpus_per_worker", 1.0), ("gpus_per_worker", 0.0)):
        value = tree.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(src, where.get(name, f"resources.{name}"), f"a non-negative number; got {value!r}")
        amounts[name] = float(value)
    gpus = amounts["gpus_per_worker"]
    if gpus > 1 and gpus != int(gpus):
        raise ConfigError(src, where["gpus_per_worker"], f"a fraction below 1 or a whole number of GPUs; got {gpus}")
    if amounts["cpus_per_worker"] == 0 and gpus == 0:
        raise ConfigError(src, where.get("cpus_per_worker", "resources.cpus_per_worker"), "some CPU or GPU per worker")
    return Resources(workers, amounts["cpus_per_worker"], gpus)


def _check_batch_split(base: Config, params: tuple[ParamSpec, ...], resources: Resources, src: str, key: str) -> None:
    """train.batch_size is global: every worker gets the same share, so results do not depend on workers."""
    sizes = [("base config", base.train.batch_size)]
    for p in params:
        if p.key == "train.batch_size":
            sizes = [("params.train.batch_size choice", v) for v in (p.grid_values() or (p.low, p.high))]
    for what, size in sizes:
        if size % resources.workers:
            raise ConfigError(src, key, f"a worker count that divides train.batch_size ({what}: {size}); got {resources.workers}")


# --------------------------------------------------------------------------- use


def base_config(space: SearchSpace) -> Config:
    """The config every trial starts from (profile and --set applied)."""
    return space.base


def trial_config(space: SearchSpace, params: Mapping[str, Any]) -> Config:
    """The config of one trial: the sampled ``params`` (dotted keys, offset sets as strings) over the base."""
    expected = {p.key for p in space.params}
    if set(params) != expected:
        missing, extra = sorted(expected - set(params)), sorted(set(params) - expected)
        raise ConfigError(space.source, "params", f"sampled values for exactly the searched keys; missing {missing}, unexpected {extra}")
    # Offset strings ("-2..2") are decoded by the config's own parser (parse_offsets).
    return _apply(space.base, params, source=f"{space.source} (trial)")


def grid_size(space_or_params: SearchSpace | tuple[ParamSpec, ...]) -> int | None:
    """How many combinations a grid enumerates; None when a parameter is continuous."""
    params = space_or_params.params if isinstance(space_or_params, SearchSpace) else space_or_params
    values = [p.grid_values() for p in params]
    return None if any(v is None for v in values) else math.prod(len(v) for v in values)


@dataclass(frozen=True)
class DefineByRun:
    """Optuna define-by-run search space for ``OptunaSearch(space=...)``.

    A module-level callable rather than a closure: OptunaSearch.save pickles its space with plain pickle.
    """

    params: tuple[ParamSpec, ...]

    def __call__(self, trial: optuna.Trial) -> None:
        for p in self.params:
            p.suggest(trial)


def define_by_run(space: SearchSpace) -> DefineByRun:
    return DefineByRun(space.params)


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler without its end-of-grid ``study.stop()``.

    Optuna allows ``stop`` only inside ``study.optimize``; OptunaSearch drives the study by ask/tell,
    so the last trial's ``tell`` would raise (and Ray log it as a warning). Tune's num_samples, at
    most the grid size, ends the sweep instead.
    """

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Any) -> None:
        return None


def _sampler_class(name: str) -> type[optuna.samplers.BaseSampler]:
    return getattr(optuna.samplers, SAMPLERS[name])


def _make_sampler(search: SearchSettings, params: tuple[ParamSpec, ...]) -> optuna.samplers.BaseSampler:
    options = dict(search.options)
    if search.sampler == "grid":
        grid = {p.key: list(p.grid_values()) for p in params}
        return _AskTellGridSampler(grid, seed=search.seed, **options)
    return _sampler_class(search.sampler)(seed=search.seed, **options)


def optuna_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """A fresh Optuna sampler, seeded with ``search.seed`` (pass it to OptunaSearch without ``seed=``)."""
    return _make_sampler(space.search, space.params)


def tune_scheduler(space: SearchSpace) -> TrialScheduler | None:
    """The Tune scheduler of ``space`` (None: every trial runs all its epochs). Metric and mode are the objective's."""
    spec = space.scheduler
    if spec is None:
        return None
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, MedianStoppingRule

    common = {"time_attr": TIME_ATTR, "metric": space.objective.metric, "mode": space.objective.mode}
    if spec.type == "asha":
        return ASHAScheduler(max_t=spec.max_t, grace_period=spec.grace_period, reduction_factor=spec.reduction_factor, **common)
    if spec.type == "hyperband":
        return HyperBandScheduler(max_t=spec.max_t, reduction_factor=spec.reduction_factor, **common)
    # The Tune counterpart of Optuna's MedianPruner (OptunaSearch switches Optuna's pruner off).
    return MedianStoppingRule(grace_period=spec.grace_period, min_samples_required=spec.min_samples_required, **common)


def describe(space: SearchSpace) -> str:
    """A human plan of the sweep, for ``cat-ray tune --dry-run``."""
    s, r = space.search, space.resources
    profile = f", profile {space.profile.name}" if space.profile else ""
    lines = [f"sweep {space.name} ({space.source}{profile})"]
    if space.description:
        lines.append(f"  {space.description.splitlines()[0]}")
    if len(space.profiles) > 1:
        lines.append(f"  profiles: {', '.join(space.profiles)}")
    lines.append(f"  base: {space.config_file or 'defaults'}"
                 + "".join(f"\n    {k} = {_show(v)}" for k, v in space.overrides))
    lines.append(f"  params ({len(space.params)}):" + "".join(f"\n    {p.describe()}" for p in space.params))
    goal = ", ".join(f"{'minimise' if m == 'min' else 'maximise'} {n}" for n, m in zip(space.objective.metrics, space.objective.modes))
    lines.append(f"  objective: {goal}" + (" (multi-objective: Pareto front)" if space.objective.is_multi else ""))
    size = grid_size(space)
    of = f" of a grid of {size}" if s.sampler == "grid" else ""
    options = "".join(f", {k}={v}" for k, v in s.options)
    lines.append(f"  search: Optuna {s.sampler} sampler (seed {s.seed}{options}), {s.num_samples} trials{of}, {s.max_concurrent} at a time")
    if space.scheduler is None:
        lines.append(f"  scheduler: none (every trial runs {space.base.train.epochs} epochs)")
    else:
        sc = space.scheduler
        detail = {"asha": f"grace {sc.grace_period} epoch(s), reduction factor {sc.reduction_factor:g}, max_t {sc.max_t}",
                  "hyperband": f"reduction factor {sc.reduction_factor:g}, max_t {sc.max_t}",
                  "median": f"grace {sc.grace_period} epoch(s), after {sc.min_samples_required} trials"}[sc.type]
        lines.append(f"  scheduler: {sc.type} on {space.objective.metrics[0]} per {TIME_ATTR} ({detail})")
    t, searched = space.base.train, {p.key for p in space.params}
    batch = "searched" if "train.batch_size" in searched else t.batch_size
    lines.append(f"  per trial: {r.workers} worker(s) x ({r.cpus_per_worker:g} CPU, {r.gpus_per_worker:g} GPU); "
                 f"{t.epochs} epochs x {t.iters_per_epoch} iterations, batch {batch}")
    per_trial = r.per_trial
    lines.append(f"  needs: {per_trial['CPU'] * s.max_concurrent:g} CPU and {per_trial['GPU'] * s.max_concurrent:g} GPU "
                 f"for {s.max_concurrent} concurrent trials")
    return "\n".join(lines)
