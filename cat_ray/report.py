"""Reports of finished sweeps: Markdown and CSV tables and PNG plots read from MLflow.

Every figure is a mean over seeds with its 95 % confidence interval (Student t, n - 1 degrees of
freedom), and every setting is compared with a baseline (by default the confidence-aware aggregator)
by a paired t-test, pairs being trials with the same seed and the same other grouped settings. A
report says which sweeps, commits and commands made it, and is logged to each sweep's parent run.

Layout of a report folder (``results/<name>/``):
- ``report.md``: every table, with its provenance;
- ``trials.csv`` (one row per trial), ``summary.csv`` (mean, CI per group and metric), ``paired.csv``,
  and, when the runs have them, ``per_offset.csv`` (each P_d alone, Table IV), ``weight_trace.csv`` (Fig. 7);
- ``<metric>.png``, ``per_offset.png``, ``weight_trace.png``.

Importing this module starts nothing; MLflow and matplotlib are imported by the functions that use them.
"""
from __future__ import annotations

import csv
import json
import math
import re
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cat_ray.config import ConfigError, parse_offsets
from cat_ray.platform import tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

SEED_KEY = "train.seed"
LEVEL = 0.95  # confidence level of every interval
ALPHA = 0.05  # significance level of the paired tests
# Short names accepted on the command line and shown in table headers.
ALIASES = {"aggregator": "model.aggregator", "offsets": "model.offsets", "CR": "data.corruption.ratio",
           "CnSc": "data.corruption.consecutive", "blocking": "data.corruption.mode", "seed": SEED_KEY}
LABELS = {v: k for k, v in ALIASES.items()}
POSE_METRICS = ("val_mpjpe", "val_pa_mpjpe", "val_pve", "val_accel_err", "agg_latency_ms")
UNITS = {"val_mpjpe": "mm", "val_pa_mpjpe": "mm", "val_pve": "mm", "val_accel_err": "mm/frame²", "agg_latency_ms": "ms"}
OFFSET_METRIC = re.compile(r"^(?P<base>val_(?:pa_)?mpjpe)_d(?P<d>-?\d+)$")
WEIGHT_METRIC = re.compile(r"^agg_weight_d(?P<d>-?\d+)$")


class ReportError(ValueError):
    """Nothing to report: an unknown sweep, no finished trials, an unknown key or metric."""


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and the half-width of its 95 % t confidence interval (NaN for n < 2)."""

    n: int
    mean: float
    sd: float
    half: float

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def show(self, digits: int = 1) -> str:
        if self.n == 0:
            return "-"
        if self.n < 2:
            return f"{self.mean:.{digits}f} (n=1)"
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"


def mean_ci(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean ± t_{(1+level)/2, n-1} · sd / √n over ``values`` (seeds)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan)
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(1, mean, math.nan, math.nan)
    sd = statistics.stdev(values)
    return Interval(n, mean, sd, float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n))


@dataclass(frozen=True)
class Paired:
    """A paired t-test of ``a - b`` over ``n`` pairs: mean difference, its 95 % CI, t and the p-value."""

    n: int
    diff: Interval
    t: float
    p: float

    @property
    def verdict(self) -> str:
        if self.n < 2:
            return "n/a (< 2 pairs)"
        if not math.isfinite(self.p):
            return "n/a (identical values)"
        return "significant" if self.p < ALPHA else "not significant"

    def show_p(self) -> str:
        return "n/a" if self.n < 2 or not math.isfinite(self.p) else f"{self.p:.3g}"


def paired_test(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Paired t-test (scipy.stats.ttest_rel) of equal-length sequences; fewer than 2 pairs give NaN."""
    from scipy import stats

    assert len(a) == len(b)
    diff = mean_ci([x - y for x, y in zip(a, b)])
    if len(a) < 2 or diff.sd == 0:
        return Paired(len(a), diff, math.nan, math.nan)
    result = stats.ttest_rel(a, b)
    return Paired(len(a), diff, float(result.statistic), float(result.pvalue))


# --------------------------------------------------------------------------- reading MLflow


@dataclass(frozen=True)
class SweepInfo:
    """The parent run of one sweep and what made it."""

    name: str
    experiment: str
    experiment_id: str
    run_id: str
    commits: tuple[str, ...]  # of its trials ("<sha> (dirty)" when the work tree had changes)
    command: str  # the cat-ray tune command that made it
    counts: dict[str, int]  # trials: total, finished, failed, stopped early, other


@dataclass(frozen=True)
class Trial:
    """One finished trial: its parameters and the value of each metric at the chosen epoch."""

    sweep: str
    run_id: str
    name: str
    params: dict[str, str]
    epoch: int
    values: dict[str, float]
    trace: tuple[dict[str, float], ...] = ()  # weight trace (Fig. 7): {"step": s, "<d>": weight}

    @property
    def seed(self) -> str:
        return self.params.get(SEED_KEY, "0")


def resolve_key(key: str) -> str:
    return ALIASES.get(key, key)


def label(key: str) -> str:
    return LABELS.get(key, key)


def _normal(key: str, value: str) -> Any:
    """A comparable form of a parameter value: offset sets as tuples, numbers as floats."""
    if key == "model.offsets":
        try:
            return parse_offsets(value)
        except ConfigError:
            return value
    try:
        return float(value)
    except ValueError:
        return value


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, float) else (1, 0, str(value))


def find_sweep(client: MlflowClient, name: str) -> Run:
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{tracking.SWEEP_TAG}` = '{name}' and tags.`{tracking.ROLE_TAG}` = 'sweep'")
    if not runs:
        known = sorted({r.data.tags.get(tracking.SWEEP_TAG, "?") for r in client.search_runs(
            experiments, f"tags.`{tracking.ROLE_TAG}` = 'sweep'", max_results=1000)})
        raise ReportError(f"no sweep named {name!r} in {client.tracking_uri}; sweeps there: {', '.join(known) or 'none'}")
    return runs[0]


def _sweep_command(parent: Run) -> str:
    """``cat-ray tune SPACE --profile P --name N [--set ...]`` from the parent's tags and the sweep's record."""
    tags = parent.data.tags
    if "cat_ray.command" in tags:
        return tags["cat_ray.command"]
    space, sweep = tags.get("space", "?"), tags[tracking.SWEEP_TAG]
    root = tracking.project_root()
    try:
        space = str(Path(space).resolve().relative_to(root))
    except ValueError:
        pass
    parts = ["cat-ray tune", space]
    if tags.get("profile") not in (None, "None"):
        parts.append(f"--profile {tags['profile']}")
    parts.append(f"--name {sweep}")
    record = root / "results" / "ray" / sweep / "sweep.json"
    if record.is_file():
        parts += [f"--set {k}={json.dumps(v) if not isinstance(v, str) else v}"
                  for k, v in json.loads(record.read_text()).get("overrides", [])[_profile_override_count(parent):]]
    return " ".join(parts)


def _profile_override_count(parent: Run) -> int:
    """sweep.json lists file, profile and --set overrides together; only the --set ones belong to the command."""
    from cat_ray.search_space import load_search_space

    tags = parent.data.tags
    try:
        space = load_search_space(tags["space"], None if tags.get("profile") in (None, "None") else tags["profile"])
    except (ConfigError, KeyError, OSError):
        return 0
    return len(space.overrides)


def clean_params(params: dict[str, str]) -> dict[str, str]:
    """Parameters with the ones that have no effect marked "-": with CR 0 nothing is blocked, so the
    blocking mode and CnSc do not matter (a clean trial of one sweep then groups with clean trials of another)."""
    try:
        clean = float(params.get("data.corruption.ratio", "nan")) == 0.0
    except ValueError:
        clean = False
    if not clean:
        return params
    return {**params, **{k: "-" for k in ("data.corruption.mode", "data.corruption.consecutive") if k in params}}


def _value_at(client: MlflowClient, run: Run, metric: str, epoch: int | None) -> float | None:
    """The metric at ``epoch`` (step), or the last value logged when ``epoch`` is None or was not logged."""
    if epoch is not None:
        for m in client.get_metric_history(run.info.run_id, metric):
            if int(m.step) == epoch:
                return float(m.value)
    value = run.data.metrics.get(metric)
    return None if value is None else float(value)


def _trace(client: MlflowClient, run: Run) -> tuple[dict[str, float], ...]:
    """The weight trace of a run (Fig. 7): metrics ``trace_weight_d{d}`` (step = training step) when
    logged, else the trace saved in its best checkpoint (``state.weight_trace``, up to the best epoch)."""
    names = [k for k in run.data.metrics if k.startswith("trace_weight_d")]
    if names:
        steps: dict[int, dict[str, float]] = {}
        for name in names:
            for m in client.get_metric_history(run.info.run_id, name):
                steps.setdefault(int(m.step), {"step": float(m.step)})[name.removeprefix("trace_weight_d")] = float(m.value)
        return tuple(steps[s] for s in sorted(steps))
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, "best_checkpoint/checkpoint.pt", tmp)
        except Exception:  # noqa: BLE001 - a run without a checkpoint simply has no trace
            return ()
        payload = torch.load(path, map_location="cpu", weights_only=False)
    return tuple(payload.get("state", {}).get("weight_trace", []))


def load_trials(client: MlflowClient, parent: Run, metrics: Iterable[str] | None, at: str = "best",
                with_trace: bool = False) -> tuple[SweepInfo, list[Trial]]:
    """The finished trials of one sweep (not failed, not stopped early) with their metric values.

    ``at="best"``: each metric at the epoch where the trial's objective was best (tag
    ``cat_ray.best_epoch``, the epoch of its best checkpoint); ``at="last"``: the last epoch's values.
    ``metrics``: which metrics to read (None: every metric the runs have).
    """
    sweep = parent.data.tags[tracking.SWEEP_TAG]
    runs = client.search_runs([parent.info.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{parent.info.run_id}'",
                              max_results=10_000, order_by=["attributes.start_time ASC"])
    counts = {"total": len(runs), "finished": 0, "failed": 0, "stopped early": 0, "other": 0}
    trials, commits = [], []
    for run in runs:
        if run.info.status == "FAILED":
            counts["failed"] += 1
            continue
        if run.info.status != "FINISHED":
            counts["other"] += 1
            continue
        if run.data.tags.get("stopped_early") == "true":
            counts["stopped early"] += 1
            continue
        counts["finished"] += 1
        tags = run.data.tags if "mlflow.source.git.commit" in run.data.tags else parent.data.tags  # trials started outside the repo
        commit = tags.get("mlflow.source.git.commit", "unknown")
        commits.append(commit[:10] + (" (dirty)" if tags.get("cat_ray.git_dirty") == "true" else ""))
        best = run.data.tags.get(tracking.BEST_EPOCH_TAG)
        epoch = int(best) if at == "best" and best is not None else None
        names = sorted(run.data.metrics) if metrics is None else [m for m in metrics if m in run.data.metrics]
        values = {m: v for m in names if (v := _value_at(client, run, m, epoch)) is not None}
        last = int(run.data.metrics.get("epoch", 0))
        trials.append(Trial(sweep, run.info.run_id, run.info.run_name, clean_params(dict(run.data.params)),
                            epoch if epoch is not None else last, values,
                            _trace(client, run) if with_trace else ()))
    info = SweepInfo(sweep, client.get_experiment(parent.info.experiment_id).name, parent.info.experiment_id,
                     parent.info.run_id, tuple(dict.fromkeys(commits)), _sweep_command(parent), counts)
    return info, trials


# --------------------------------------------------------------------------- grouping


@dataclass(frozen=True)
class Baseline:
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Baseline:
        """``confidence`` (an aggregator) or ``KEY=VALUE`` (``offsets=-2..2``)."""
        if "=" in text:
            key, value = text.split("=", 1)
            return cls(resolve_key(key.strip()), value.strip())
        return cls("model.aggregator", text.strip())

    def matches(self, value: str) -> bool:
        return _normal(self.key, value) == _normal(self.key, self.value)

    def show(self) -> str:
        return f"{label(self.key)}={self.value}"


def filter_trials(trials: list[Trial], where: Sequence[str]) -> list[Trial]:
    """Keep the trials whose parameters match every ``KEY=VALUE`` (values compared as numbers/offset sets)."""
    for clause in where:
        if "=" not in clause:
            raise ReportError(f"--where {clause!r}: expected KEY=VALUE, e.g. CR=0.33")
        key, value = clause.split("=", 1)
        key = resolve_key(key.strip())
        if trials and all(key not in t.params for t in trials):
            raise ReportError(f"--where {clause!r}: the runs have no parameter {key}")
        options = [v.strip() for v in value.split("|")]  # CR=0|0.33
        trials = [t for t in trials if any(_normal(key, t.params.get(key, "")) == _normal(key, o) for o in options)]
    return trials


def default_group_by(trials: list[Trial]) -> list[str]:
    """``model.aggregator`` and every other parameter that varies among the trials, the seed excepted."""
    keys = sorted({k for t in trials for k in t.params})
    varying = [k for k in keys if k != SEED_KEY and len({t.params.get(k) for t in trials}) > 1]
    return ["model.aggregator"] + [k for k in varying if k != "model.aggregator"]


@dataclass
class Group:
    key: tuple[str, ...]  # values of the group-by keys
    trials: list[Trial] = field(default_factory=list)

    def by_seed(self, metric: str) -> dict[str, float]:
        """One value per seed (the mean when a seed has several trials in the group)."""
        seeds: dict[str, list[float]] = {}
        for t in self.trials:
            if metric in t.values:
                seeds.setdefault(t.seed, []).append(t.values[metric])
        return {s: statistics.fmean(v) for s, v in seeds.items()}

    def interval(self, metric: str) -> Interval:
        return mean_ci(list(self.by_seed(metric).values()))


def make_groups(trials: list[Trial], group_by: list[str]) -> list[Group]:
    groups: dict[tuple[str, ...], Group] = {}
    for t in trials:
        key = tuple(t.params.get(k, "?") for k in group_by)
        groups.setdefault(key, Group(key)).trials.append(t)
    return sorted(groups.values(), key=lambda g: [_sort_key(_normal(k, v)) for k, v in zip(group_by, g.key)])


@dataclass(frozen=True)
class Comparison:
    group: tuple[str, ...]
    reference: tuple[str, ...]
    metric: str
    seeds: tuple[str, ...]
    test: Paired


def compare(groups: list[Group], group_by: list[str], baseline: Baseline, metric: str) -> list[Comparison]:
    """Each group against the baseline group with the same other settings, paired by seed (group - baseline)."""
    if baseline.key not in group_by:
        return []
    i = group_by.index(baseline.key)

    def rest(g: Group) -> tuple:
        return tuple(_normal(k, v) for j, (k, v) in enumerate(zip(group_by, g.key)) if j != i)

    references = {rest(g): g for g in groups if baseline.matches(g.key[i])}
    found = []
    for g in groups:
        ref = references.get(rest(g))
        if ref is None or ref is g:
            continue
        a, b = g.by_seed(metric), ref.by_seed(metric)
        seeds = tuple(sorted(set(a) & set(b), key=lambda s: _sort_key(_normal(SEED_KEY, s))))
        found.append(Comparison(g.key, ref.key, metric, seeds, paired_test([a[s] for s in seeds], [b[s] for s in seeds])))
    return found


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class ReportSpec:
    sweeps: tuple[str, ...]
    out: Path
    metric: str = "val_pa_mpjpe"
    baseline: str = "confidence"
    group_by: tuple[str, ...] = ()  # empty: default_group_by
    where: tuple[str, ...] = ()
    x: str | None = None  # plot this numeric key on the x axis (lines over the other group keys)
    at: str = "best"
    weight_trace: bool = False
    title: str | None = None
    command: str = ""  # the command that made the report, written into it


@dataclass(frozen=True)
class Report:
    spec: ReportSpec
    sweeps: tuple[SweepInfo, ...]
    trials: tuple[Trial, ...]
    group_by: tuple[str, ...]
    groups: tuple[Group, ...]
    metrics: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    files: tuple[Path, ...] = ()


def build_report(client: MlflowClient, spec: ReportSpec) -> Report:
    """Read the sweeps, filter, group, summarise and compare (nothing written)."""
    infos, trials = [], []
    for name in spec.sweeps:
        info, found = load_trials(client, find_sweep(client, name), None, spec.at, spec.weight_trace)
        infos.append(info)
        trials += found
    trials = filter_trials(trials, spec.where)
    if not trials:
        raise ReportError(f"no finished trials in sweep(s) {', '.join(spec.sweeps)}"
                          + (f" matching {' '.join(spec.where)}" if spec.where else ""))
    group_by = [resolve_key(k) for k in spec.group_by] or default_group_by(trials)
    unknown = [k for k in group_by if all(k not in t.params for t in trials)]
    if unknown:
        raise ReportError(f"--group-by: the runs have no parameter {unknown[0]} (parameters are dotted config keys, "
                          f"e.g. data.corruption.ratio; aliases: {', '.join(ALIASES)})")
    present = {m for t in trials for m in t.values}
    if spec.metric not in present:
        raise ReportError(f"--metric {spec.metric}: not logged by these runs; they have {', '.join(sorted(present))}")
    metrics = tuple([spec.metric] + [m for m in POSE_METRICS if m in present and m != spec.metric])
    groups = make_groups(trials, group_by)
    baseline = Baseline.parse(spec.baseline)
    comparisons = [c for m in metrics[:4] for c in compare(groups, group_by, baseline, m)]
    return Report(spec, tuple(infos), tuple(trials), tuple(group_by), tuple(groups), metrics, tuple(comparisons))


def _offsets_of(trials: Sequence[Trial], pattern: re.Pattern, base: str | None = None) -> list[int]:
    found = {int(m["d"]) for t in trials for k in t.values if (m := pattern.match(k)) and (base is None or m["base"] == base)}
    return sorted(found)


def shown(report: Report, key: tuple[str, ...]) -> list[str]:
    """Group values as tables show them: offset sets as ranges where they are ones ("-2..2")."""
    return [tracking.offsets_label(parse_offsets(v)) if k == "model.offsets" and v != "?" else v
            for k, v in zip(report.group_by, key)]


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows), ""]


def provenance(report: Report) -> list[str]:
    """Which sweeps, commits and commands made the report, and how its numbers are computed."""
    spec = report.spec
    lines = ["## Provenance", "", f"- report command: `{spec.command}`" if spec.command else "- report: cat_ray.report"]
    for s in report.sweeps:
        c = s.counts
        lines.append(f"- sweep `{s.name}` (MLflow experiment `{s.experiment}`, parent run `{s.run_id}`), made by "
                     f"`{s.command}`; commit {', '.join(s.commits) or 'unknown'}; trials: {c['total']} "
                     f"({c['finished']} finished and used, {c['failed']} failed, {c['stopped early']} stopped early"
                     + (f", {c['other']} unfinished" if c["other"] else "") + ")")
    if spec.where:
        lines.append(f"- trials kept: {' and '.join(spec.where)} ({len(report.trials)} trials)")
    lines.append(f"- values: each trial's {'epoch of its best validation objective (its best checkpoint)' if spec.at == 'best' else 'last epoch'}, "
                 "validation split of the synthetic benchmark unless the runs say otherwise; mm (accel: mm/frame², latency: ms)")
    lines.append(f"- mean ± half-width of the {LEVEL:.0%} t confidence interval over seeds (n - 1 degrees of freedom); "
                 f"paired t-tests against {Baseline.parse(spec.baseline).show()}, pairs = same seed and same other "
                 f"grouped settings, significant when p < {ALPHA}")
    return lines + [""]


def summary_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    header = [label(k) for k in report.group_by] + ["seeds"] + [f"{m} ({UNITS.get(m, '')})" for m in report.metrics]
    rows = [[*shown(report, g.key), len(g.by_seed(report.metrics[0]))] + [g.interval(m).show(2 if m == "agg_latency_ms" else 1)
                                                          for m in report.metrics] for g in report.groups]
    return header, rows


def comparison_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    header = [label(k) for k in report.group_by] + ["vs", "metric", "pairs", "difference (mm)", "95 % CI", "p", "verdict"]
    rows = []
    for c in report.comparisons:
        d = c.test.diff
        ci = f"[{d.low:+.1f}, {d.high:+.1f}]" if c.test.n >= 2 else "n/a"
        rows.append([*shown(report, c.group), Baseline.parse(report.spec.baseline).show(), c.metric, c.test.n,
                     f"{d.mean:+.1f}" if d.n else "-", ci, c.test.show_p(), c.test.verdict])
    return header, rows


def per_offset_rows(report: Report) -> tuple[list[str], list[list[Any]], list[list[Any]]]:
    """Table IV: each P_d alone against the aggregate, in the same runs (pairs = trials)."""
    base = report.spec.metric if report.spec.metric in ("val_mpjpe", "val_pa_mpjpe") else "val_pa_mpjpe"
    offsets = _offsets_of(report.trials, OFFSET_METRIC, base)
    header = [label(k) for k in report.group_by] + ["seeds"] + [f"P_{d} alone" for d in offsets] + ["aggregate"]
    rows, csv_rows = [], []
    for g in report.groups:
        if not any(f"{base}_d{d}" in t.values for t in g.trials for d in offsets):
            continue
        aggregate = g.by_seed(base)
        cells = []
        for d in offsets:
            alone = g.by_seed(f"{base}_d{d}")
            seeds = sorted(set(alone) & set(aggregate))
            test = paired_test([alone[s] for s in seeds], [aggregate[s] for s in seeds])
            iv = mean_ci(list(alone.values()))
            cells.append(f"{iv.show()} (Δ {test.diff.mean:+.1f}, p {test.show_p()})" if alone else "-")
            csv_rows.append([*g.key, d, base, iv.n, iv.mean, iv.low, iv.high, test.n, test.diff.mean, test.diff.low,
                             test.diff.high, test.p, test.verdict])
        rows.append([*shown(report, g.key), len(aggregate)] + cells + [mean_ci(list(aggregate.values())).show()])
    return header, rows, csv_rows


def weight_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    offsets = _offsets_of(report.trials, WEIGHT_METRIC)
    header = [label(k) for k in report.group_by] + [f"w_{d}" for d in offsets]
    rows = [[*shown(report, g.key)] + [g.interval(f"agg_weight_d{d}").show(3) for d in offsets]
            for g in report.groups if any(f"agg_weight_d{d}" in t.values for t in g.trials for d in offsets)]
    return header, rows


def write_report(report: Report) -> Report:
    """Write report.md, the CSV files and the plots into ``spec.out``; returns the report with its files."""
    out = Path(report.spec.out)
    out.mkdir(parents=True, exist_ok=True)
    spec, files = report.spec, []
    title = spec.title or f"Report of {', '.join(spec.sweeps)}"
    md = [f"# {title}", "", *provenance(report)]

    header, rows = summary_rows(report)
    md += [f"## Results by {', '.join(label(k) for k in report.group_by)}", "", *_table(header, rows)]
    plot = plot_metric(report, out / f"{spec.metric}.png")
    md += [f"![{spec.metric}]({plot.name})", ""]
    files.append(plot)

    header, rows = comparison_rows(report)
    md += [f"## Paired comparison against {Baseline.parse(spec.baseline).show()}", "",
           "Difference = setting − baseline (negative: lower error than the baseline).", ""]
    md += _table(header, rows) if rows else [f"No comparison: {Baseline.parse(spec.baseline).key} is not a grouped "
                                             "key, or no group has a baseline with the same other settings.", ""]

    off_header, off_rows, off_csv = per_offset_rows(report)
    if off_rows:
        md += ["## Each predictor P_d alone against the aggregate (Table IV)", "",
               "Per cell: mean ± 95 % CI over seeds; Δ = P_d alone − aggregate, paired t-test over the same runs.", "",
               *_table(off_header, off_rows)]
        files.append(_write_csv(out / "per_offset.csv", [*report.group_by, "offset", "metric", "n", "mean", "ci_low",
                                                          "ci_high", "pairs", "diff_vs_aggregate", "diff_ci_low",
                                                          "diff_ci_high", "p", "verdict"], off_csv))
        files.append(plot_per_offset(report, out / "per_offset.png"))
        md += [f"![per offset]({files[-1].name})", ""]

    w_header, w_rows = weight_rows(report)
    if w_rows:
        md += ["## Mean aggregation weight per offset (validation, chosen epoch)", "", *_table(w_header, w_rows)]

    if spec.weight_trace and any(t.trace for t in report.trials):
        trace_csv, trace_png = write_trace(report, out)
        files += [trace_csv, trace_png]
        md += ["## Aggregation weights over the first training steps (Fig. 7)", "",
               "Batch-mean softmax(−s) per offset every `train.weight_trace_every` steps; mean over seeds, "
               "band: 95 % CI.", "", f"![weight trace]({trace_png.name})", ""]

    files.append(_write_trials_csv(report, out / "trials.csv"))
    files.append(_write_summary_csv(report, out / "summary.csv"))
    files.append(_write_paired_csv(report, out / "paired.csv"))
    (out / "report.md").write_text("\n".join(md))
    files.insert(0, out / "report.md")
    return replace(report, files=tuple(files))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_trials_csv(report: Report, path: Path) -> Path:
    metrics = sorted({m for t in report.trials for m in t.values} - {"epoch"})
    header = ["sweep", "run_id", "run_name", *report.group_by, SEED_KEY, "chosen_epoch", *metrics]
    rows = [[t.sweep, t.run_id, t.name, *(t.params.get(k, "") for k in report.group_by), t.seed, t.epoch,
             *(t.values.get(m, "") for m in metrics)] for t in report.trials]
    return _write_csv(path, header, rows)


def _write_summary_csv(report: Report, path: Path) -> Path:
    rows = []
    for g in report.groups:
        for m in report.metrics:
            iv = g.interval(m)
            rows.append([*g.key, m, iv.n, iv.mean, iv.sd, iv.low, iv.high])
    return _write_csv(path, [*report.group_by, "metric", "n", "mean", "sd", "ci_low", "ci_high"], rows)


def _write_paired_csv(report: Report, path: Path) -> Path:
    rows = [[*c.group, report.spec.baseline, c.metric, c.test.n, " ".join(c.seeds), c.test.diff.mean, c.test.diff.low,
             c.test.diff.high, c.test.t, c.test.p, c.test.verdict] for c in report.comparisons]
    return _write_csv(path, [*report.group_by, "baseline", "metric", "pairs", "seeds", "diff", "diff_ci_low",
                             "diff_ci_high", "t", "p", "verdict"], rows)


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _group_name(report: Report, key: tuple[str, ...], skip: int | None = None) -> str:
    return ", ".join(f"{label(k)}={v}" if k != "model.aggregator" else v
                     for i, (k, v) in enumerate(zip(report.group_by, shown(report, key))) if i != skip) or "all"


def _series(report: Report, i: int) -> dict[str, list[Group]]:
    """Groups as lines over the grouped key ``i``; a group with "-" settings (clean: no blocking) starts
    every line whose other settings it matches."""
    lines: dict[str, list[Group]] = {}
    shared = [g for g in report.groups if "-" in g.key]
    for g in report.groups:
        if g not in shared:
            lines.setdefault(_group_name(report, g.key, skip=i), []).append(g)
    for members in lines.values():
        rest = members[0].key
        members += [s for s in shared if all(v == "-" or v == r for j, (v, r) in enumerate(zip(s.key, rest)) if j != i)]
        members.sort(key=lambda g: _sort_key(_normal(report.group_by[i], g.key[i])))
    return lines or {_group_name(report, g.key, skip=i): [g] for g in shared}


def plot_metric(report: Report, path: Path) -> Path:
    """Mean ± 95 % CI per group of the report's metric, MPJPE and accel error (one panel each; dots: seeds);
    with ``spec.x``, lines over that key instead."""
    plt = _pyplot()
    present = {m for t in report.trials for m in t.values}
    metrics = list(dict.fromkeys([report.spec.metric] + [m for m in ("val_mpjpe", "val_accel_err") if m in present]))
    x_key = resolve_key(report.spec.x) if report.spec.x else None
    if x_key is not None and x_key in report.group_by:
        i = report.group_by.index(x_key)
        lines = _series(report, i)
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), dpi=90, squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for n, (name, members) in enumerate(lines.items()):
                xs = [float(g.key[i]) + (n - len(lines) / 2) * 0.003 for g in members]  # a small dodge
                ivs = [g.interval(metric) for g in members]
                ax.errorbar(xs, [iv.mean for iv in ivs], yerr=[0 if math.isnan(iv.half) else iv.half for iv in ivs],
                            marker="o", capsize=3, label=name, color=f"C{n % 10}", linestyle="-" if n < 10 else "--")
            ax.set_xlabel(label(x_key))
            ax.set_ylabel(f"{metric} ({UNITS.get(metric, '')})")
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        height = 0.9 + 0.3 * len(report.groups)
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 2.2, height), dpi=90, squeeze=False,
                                 sharey=True)
        for ax, metric in zip(axes[0], metrics):
            for y, g in enumerate(report.groups):
                iv, seeds = g.interval(metric), list(g.by_seed(metric).values())
                ax.errorbar([iv.mean], [y], xerr=[[0 if math.isnan(iv.half) else iv.half]] * 2, fmt="o", color="C0", capsize=3)
                ax.scatter(seeds, [y] * len(seeds), s=10, color="C1", alpha=0.7, zorder=3)
            ax.set_xlabel(f"{metric} ({UNITS.get(metric, '')})")
        axes[0][0].set_yticks(range(len(report.groups)), [_group_name(report, g.key) for g in report.groups], fontsize=8)
        axes[0][0].invert_yaxis()
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    fig.suptitle("mean ± 95 % CI over seeds" + (" (dots: seeds)" if x_key is None else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_per_offset(report: Report, path: Path) -> Path:
    plt = _pyplot()
    base = report.spec.metric if report.spec.metric in ("val_mpjpe", "val_pa_mpjpe") else "val_pa_mpjpe"
    offsets = _offsets_of(report.trials, OFFSET_METRIC, base)
    groups = [g for g in report.groups if any(f"{base}_d{d}" in t.values for t in g.trials for d in offsets)]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    width = 0.8 / max(1, len(groups))
    for n, g in enumerate(groups):
        names = [f"P_{d}" for d in offsets] + ["aggregate"]
        ivs = [g.interval(f"{base}_d{d}") for d in offsets] + [g.interval(base)]
        ax.bar([i + n * width for i in range(len(names))], [iv.mean for iv in ivs], width,
               yerr=[0 if math.isnan(iv.half) else iv.half for iv in ivs], capsize=3, label=_group_name(report, g.key))
        ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel(f"{base} (mm)")
    lows = [iv.low for g in groups for iv in [g.interval(base)] if not math.isnan(iv.low)]
    if lows:
        ax.set_ylim(bottom=0.9 * min(lows))
    ax.set_title("each predictor P_d alone vs the aggregate: mean ± 95 % CI over seeds", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_trace(report: Report, out: Path) -> tuple[Path, Path]:
    """Fig. 7: per group (offset set), the mean weight per offset over training steps, band = 95 % CI over seeds."""
    plt = _pyplot()
    groups = [g for g in report.groups if any(t.trace for t in g.trials)]
    rows = []
    fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups), 3.0), dpi=100, squeeze=False)
    for ax, g in zip(axes[0], groups):
        traces = [t.trace for t in g.trials if t.trace]
        offsets = sorted({int(k) for tr in traces for e in tr for k in e if k != "step"})
        steps = sorted({int(e["step"]) for tr in traces for e in tr})
        steps = [s for s in steps if all(any(int(e["step"]) == s for e in tr) for tr in traces)]
        for d in offsets:
            ivs = [mean_ci([next(e[str(d)] for e in tr if int(e["step"]) == s) for tr in traces]) for s in steps]
            rows += [[*g.key, d, s, iv.n, iv.mean, iv.low, iv.high] for s, iv in zip(steps, ivs)]
            ax.plot(steps, [iv.mean for iv in ivs], label=f"d={d}")
            if len(traces) > 1:
                ax.fill_between(steps, [iv.low for iv in ivs], [iv.high for iv in ivs], alpha=0.2)
        ax.set_title(_group_name(report, g.key), fontsize=8)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("mean weight softmax(−s)")
    fig.tight_layout()
    png = out / "weight_trace.png"
    fig.savefig(png)
    plt.close(fig)
    csv_path = _write_csv(out / "weight_trace.csv", [*report.group_by, "offset", "step", "n", "mean", "ci_low", "ci_high"], rows)
    return csv_path, png


# --------------------------------------------------------------------------- entry point


def make_report(spec: ReportSpec, uri: str | None = None, log: bool = True) -> Report:
    """Build and write the report; log its files to each sweep's parent run under ``report/<folder name>``."""
    from mlflow import MlflowClient

    client = MlflowClient(uri or tracking.tracking_uri())
    report = write_report(build_report(client, spec))
    if log:
        for sweep in report.sweeps:
            for path in report.files:
                client.log_artifact(sweep.run_id, str(path), f"report/{Path(spec.out).name}")
    return report
