"""The config boundary: validate an experiment ConfigDict once and parse it into a typed
:class:`resq_jax.experiment.spec.Experiment`.

The entry points (``train.py``, ``eval.py``, ``demo.py`` through ``pipeline``) call
:func:`parse` before any data is built or anything compiles; everything below them takes the
``Experiment`` (or one of its parts) and never reads a ConfigDict (docs/design.md section 1).

Every key is declared once, in ``resq_jax.experiment.schema.KEYS``: its default, its rule (type
and range, and its relation to other keys, ``resq_jax.experiment.rules``) and the
``Experiment`` field it fills, which :func:`parse` follows.
:func:`validate` is pure Python and raises one :class:`ConfigError` listing every problem, one
line each: ``key: got VALUE (allowed: RANGE)``, or ``unknown config key 'optim.learning_rate'
(did you mean 'optim.lr'?)``. The entry points print those lines and exit with status 2, without
a traceback (``errors.run_cli``; :func:`parse_flags` does the same for bad ``--config.*``
flags, which absl parses before ``main`` runs).
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn

import jax
import ml_collections
from absl import flags
from ml_collections.config_flags.config_flags import is_config_flag

from resq_jax import errors
from resq_jax.experiment.checks import (
  FRAME_PRECISION,
  SETTING_FAMILY_KEY,
  SETTING_KEYS,
  SETTING_NAME_KEY,
  Context,
  pairs,
)
from resq_jax.experiment.rules import task_for
from resq_jax.experiment.schema import KEYS, RULES, SECTIONS, default_config
from resq_jax.experiment.spec import (
  DataSpec,
  EvalSpec,
  Experiment,
  FramePrecisionPlan,
  ModelSpec,
  OptimSpec,
  QuantPlan,
  Setting,
  TrainSpec,
)
from resq_jax.nn.calibrate import CalibrationMethods
from resq_jax.quant.dynamic import FixedStepPolicy, GatePolicy, HoldPolicy, LadderPolicy
from resq_jax.quant.keyframes import KeyframeTrigger
from resq_jax.quant.recipe import (
  LayerRecipe,
  dynamic_recipe,
  float_recipe,
  fq_recipe,
  resq_recipe,
)

__all__ = [
  "ConfigError",
  "check_device_count",
  "flatten",
  "frame_precision_from",
  "parse",
  "parse_flags",
  "problems",
  "recipe_from",
  "setting_from",
  "validate",
]


class ConfigError(errors.InvalidConfigError):  # a ValueError; exit code errors.EXIT_CONFIG (2)
  """An invalid config. ``problems`` holds one line per problem, ``key: message (allowed: ...)``;
  ``str(error)`` is those lines joined by newlines."""

  def __init__(self, problems: Sequence[str]):
    self.problems = tuple(problems)
    super().__init__("\n".join(self.problems))


# --- Validation ----------------------------------------------------------------------------------
def flatten(config, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """``(dotted key, value)`` of every leaf of ``config`` (a ConfigDict or a nested dict, e.g. a
  run's ``config.json``); the schema's keys are never descended into (``eval.sweeps``)."""
  for key in config:
    name, value = f"{prefix}{key}", config[key]
    if name not in RULES and isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from flatten(value, name + ".")
    else:
      yield name, value


def suggest(name: str) -> str | None:
  """The config key that an unknown ``name`` most likely meant, or None."""
  section, _, leaf = name.rpartition(".")
  leaf = next((k.leaf for k in KEYS if leaf.lower() in k.aliases), leaf)
  same_leaf = [k for k in RULES if k.rpartition(".")[2] == leaf]
  if same_leaf:
    return next((k for k in same_leaf if k.startswith(section + ".")), same_leaf[0])
  close = difflib.get_close_matches(name, list(RULES) + list(SECTIONS), n=1, cutoff=0.6)
  return close[0] if close else None


def _unknown(name: str) -> str:
  guess = suggest(name)
  hint = f"did you mean {guess!r}?" if guess else "see configs/default.py for every key"
  return f"unknown config key {name!r} ({hint})"


def _show(value) -> str:
  """A one-line repr (a ConfigDict's own repr is multi-line YAML)."""
  return repr(value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value)


def problems(config, *, num_devices: int | None = None, needs_init_from: bool = False) -> list[str]:
  """Every problem of ``config``, one ``key: message (allowed: ...)`` line each."""
  found, values, broken = [], {}, set()
  for name, value in flatten(config):
    if name in RULES:
      values[name] = value
    elif name in SECTIONS:  # a section replaced by a plain value
      broken.add(name)
      keys = ", ".join(k.partition(".")[2] for k in RULES if k.startswith(name + "."))
      found.append(f"{name}: got {value!r} (allowed: a section with keys {keys})")
    else:
      found.append(_unknown(name))
  valid = set()
  for key, rule in RULES.items():
    if key not in values:
      if key.partition(".")[0] not in broken:
        found.append(f"{key}: missing (allowed: {rule.describe()})")
      continue
    if rule.accepts(values[key]):
      valid.add(key)
    else:
      found.append(f"{key}: got {_show(values[key])} (allowed: {rule.describe()})")
  if num_devices is None and not (
    values.get("distributed") is True and not jax.distributed.is_initialized()
  ):
    num_devices = jax.device_count()  # else unknown until jax.distributed.initialize()
  ctx = Context(values, frozenset(valid), num_devices, needs_init_from, RULES)
  for key, rule in RULES.items():
    if key in valid and rule.relation is not None:
      message = rule.relation(values[key], ctx)
      if message:
        found.append(f"{key}: {message}")
  return found


def validate(
  config: ml_collections.ConfigDict,
  *,
  num_devices: int | None = None,
  needs_init_from: bool = False,
) -> None:
  """Raise one :class:`ConfigError` listing every problem of ``config``; None if it is valid.

  Pure Python over the ConfigDict (nothing is built or compiled). Batch sizes must divide over
  ``num_devices``, by default ``jax.device_count()``; except that for ``distributed=True`` before
  ``jax.distributed.initialize()`` that check is skipped (the global count is not known yet, and
  asking for it would start the backend, after which initialize fails): validate again after
  initialising. ``needs_init_from``: the caller restores the FP run (an evaluation sweep, or
  the entry of a PTQ / QAT stage), so ``init_from`` must be set; parsing alone never needs it.
  """
  found = problems(config, num_devices=num_devices, needs_init_from=needs_init_from)
  if found:
    raise ConfigError(found)


# --- Entry points: one line per problem, exit status 2, no traceback -----------------------------
def _exit(lines: Sequence[str], kind: str) -> NoReturn:
  for line in lines:
    print(f"{kind}: {line}", file=sys.stderr, flush=True)
  sys.exit(errors.EXIT_CONFIG)


def check_overrides(argv: Sequence[str], flag_names: Sequence[str] = ("config",)) -> None:
  """ConfigError naming every ``--<flag>.<key>=...`` in ``argv`` whose key is not a config key
  (ml_collections would raise a bare ``AttributeError: 'learning_rate'`` while parsing)."""
  found = []
  for arg in argv[1:]:
    if arg == "--":
      break
    if not arg.startswith("-"):
      continue
    flag, _, path = arg.lstrip("-").partition("=")[0].partition(".")
    if flag not in flag_names and flag.startswith("no") and flag[2:] in flag_names:
      flag = flag[2:]  # --noconfig.train.unroll
    if flag in flag_names and path and path not in RULES and path not in SECTIONS:
      found.append(_unknown(path))
  if found:
    raise ConfigError(found)


_BAD_VALUE = re.compile(
  r"flag --(?P<flag>[^.=\s]+)\.(?P<key>[^=\s]+)=(?P<value>.*?): "
  r"(?P<why>.*)"
)


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues | None = None) -> list[str]:
  """An absl ``flags_parser`` for the entry points:
  ``app.run(main, flags_parser=config_lib.parse_flags)``.

  Parses like absl's default, but an unknown ``--config.<key>`` (a typo), a value that does not
  parse (``--config.optim.lr=abc``), a missing required flag or an unreadable config file prints
  one line (``config error: ...`` / ``flag error: ...``) and exits 2 instead of a traceback or
  absl's usage text. Returns the remaining arguments, as absl's parser does.
  """
  fv = flags.FLAGS if flag_values is None else flag_values
  names = [name for name in fv if is_config_flag(fv[name])]
  try:
    check_overrides(argv, names)
    remaining = fv(list(argv))
  except ConfigError as e:
    _exit(e.problems, "config error")
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    _exit(*_flag_error(" ".join(str(e).split()), names))
  for name in names:  # ml_collections defers a config file's load error to the first access
    try:
      getattr(fv[name].value, "keys", None)
    except OSError as e:
      why = str(e).strip().splitlines()[-1].strip()
      _exit([f"cannot load the config file of --{name}: {why}"], "flag error")
  return remaining


def _flag_error(message: str, names: Sequence[str]) -> tuple[list[str], str]:
  """(lines, kind) for a flag parsing error; a bad ``--config.<key>`` value names its rule."""
  match = _BAD_VALUE.fullmatch(message)
  if match and match["flag"] in names and match["key"] in RULES:
    allowed = RULES[match["key"]].describe()
    return [
      (f"{match['key']}: cannot parse {match['value']!r}: {match['why']} (allowed: {allowed})")
    ], "config error"
  return [message], "flag error"


# --- Parsing: the typed Experiment ------------------------------------------------------------
def policy_from(q) -> FixedStepPolicy | LadderPolicy | GatePolicy | HoldPolicy:
  """The dynamic ResQ policy of a ``quant`` section (a ConfigDict or a plain mapping)."""
  if q["policy"] == "ladder":
    return LadderPolicy(bits=tuple(q["policy_bits"]), thresholds=tuple(q["thresholds"]))
  if q["policy"] == "gate":
    return GatePolicy(
      bits=tuple(q["policy_bits"]),
      threshold=float(q["gate_threshold"]),
      step=float(q["policy_step"]),
    )
  if q["policy"] == "hold":
    return HoldPolicy()
  return FixedStepPolicy(bits=tuple(q["policy_bits"]), step=float(q["policy_step"]))


def frame_precision_from(q) -> FramePrecisionPlan | None:
  """The per-frame precision plan of a ``quant`` section in mode 'frame_precision' (FQ
  candidates from ``frame_bits``, ``frame_thresholds``), else None."""
  if q["mode"] != FRAME_PRECISION:
    return None
  candidates = tuple(fq_recipe(w, a) for w, a in pairs(q["frame_bits"]))
  return FramePrecisionPlan(candidates, tuple(float(t) for t in q["frame_thresholds"]))


def recipe_from(q) -> LayerRecipe:
  """The LayerRecipe of a ``quant`` section (a ConfigDict or a plain mapping); in mode
  'frame_precision' the top candidate (:func:`frame_precision_from` gives them all)."""
  key_bits, res_bits = tuple(q["key_bits"]), tuple(q["residual_bits"])
  if q["mode"] == FRAME_PRECISION:
    return frame_precision_from(q).top
  if q["mode"] == "float":
    return float_recipe()
  if q["mode"] == "fq":
    return fq_recipe(*key_bits)
  if q["mode"] == "resq":
    return resq_recipe(key_bits, res_bits, q["ref_mode"], q["stop_ref_gradient"])
  return dynamic_recipe(policy_from(q), key_bits, res_bits, q["ref_mode"], q["stop_ref_gradient"])


def trigger_from(q, recipe: LayerRecipe) -> KeyframeTrigger | None:
  """The adaptive-keyframe trigger of a quant section (``cut_threshold`` / ``drift_threshold``,
  0 = off; ``period`` its longest distance), or None: both off, or a recipe without keyframes."""
  cut, drift = float(q.get("cut_threshold", 0.0)), float(q.get("drift_threshold", 0.0))
  if (cut <= 0 and drift <= 0) or recipe.mode in ("float", "fq"):
    return None
  return KeyframeTrigger(
    cut_threshold=cut if cut > 0 else None,
    drift_threshold=drift if drift > 0 else None,
    max_period=int(q["period"]),
  )


def setting_from(
  quant: Mapping, entry: Mapping, *, source: str | None = None, run_dir: str = ""
) -> Setting:
  """The :class:`Setting` of one sweep entry: ``entry`` (an ``eval.sweeps`` setting: quant keys
  plus an optional display ``name`` and ``family``) merged over ``quant`` (a whole ``quant``
  section, e.g. the config's). ``source``: where its weights come from (default: 'fp' for the
  float recipe, else 'ptq'); ``run_dir``: the QAT run of source 'qat'. Without a ``name`` the
  setting is named by :func:`default_setting_name`."""
  values = {**quant, **{k: entry[k] for k in entry if k not in SETTING_KEYS}}
  recipe = recipe_from(values)
  setting = Setting(
    name="",
    recipe=recipe,
    period=values["period"],
    source=source or ("fp" if recipe.mode == "float" else "ptq"),
    run_dir=run_dir,
    family_label=entry.get(SETTING_FAMILY_KEY) or "",
    frame_precision=frame_precision_from(values),
    trigger=trigger_from(values, recipe),
  )
  name = entry.get(SETTING_NAME_KEY) or default_setting_name(setting)
  return dataclasses.replace(setting, name=name)


def default_setting_name(setting: Setting) -> str:
  """'FP32', 'FQ W4A4', 'ResQ K=4 closed W8A8/W4A4', 'DynResQ K=4 step=1', 'Hold K=4 W8A8',
  'Gate K=4 prev W8A8 thr=1', 'FramePrec W4A4/W6A6/W8A8 thr=0.05/0.15' (+ ' QAT')."""
  r, plan = setting.recipe, setting.frame_precision
  if plan is not None:
    bits = "/".join("W{}A{}".format(*c.key.bits) for c in plan.candidates)
    name = f"FramePrec {bits} thr={'/'.join(f'{t:g}' for t in plan.thresholds)}"
  elif isinstance(r.policy, HoldPolicy) and r.mode == "dynamic":
    name = f"Hold K={setting.period} W{r.key.bits[0]}A{r.key.bits[1]}"
  elif isinstance(r.policy, GatePolicy) and r.mode == "dynamic":
    p = r.policy
    step = "" if p.step == 1.0 else f" step={p.step:.3g}"
    name = (
      f"Gate K={setting.period} {r.ref_mode} W{r.residual.weight.bits}A{p.bits[-1]} "
      f"thr={p.threshold:g}{step}"
    )
  elif r.mode == "float":
    name = "FP32"
  elif r.mode == "fq":
    name = "FQ W{}A{}".format(*r.key.bits)
  else:
    bits = "W{}A{}/W{}A{}".format(*r.key.bits, *r.residual.bits)
    if r.mode == "resq":
      name = f"ResQ K={setting.period} {r.ref_mode} {bits}"
    else:
      step = getattr(r.policy, "step", None)
      policy = f"step={step:g}" if step is not None else type(r.policy).__name__
      name = f"DynResQ K={setting.period} {policy}"
  trig = setting.trigger
  if trig is not None:
    parts = [f"cut={trig.cut_threshold:g}"] * (trig.cut_threshold is not None) + [
      f"drift={trig.drift_threshold:g}"
    ] * (trig.drift_threshold is not None)
    name += f" adaptive {' '.join(parts)}"
  return name + (" QAT" if setting.source == "qat" else "")


def qat_setting(run_config: Mapping, run_dir: str, name: str) -> Setting:
  """The evaluated setting of a finished QAT run, from its saved ``config.json`` (a dict)."""
  # Keys added to the schema after the run take their defaults.
  quant = {**default_config().quant.to_dict(), **dict(run_config["quant"])}
  return setting_from(quant, {SETTING_NAME_KEY: name}, source="qat", run_dir=run_dir)


def _frozen(value):
  """Lists (a config read back from JSON) as tuples, so that every spec stays hashable."""
  return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def parse(
  config: ml_collections.ConfigDict,
  *,
  num_devices: int | None = None,
  needs_init_from: bool = False,
) -> Experiment:
  """Validate ``config`` (:func:`validate`, same arguments) and build its :class:`Experiment`.

  The one place where config keys are read: each key of ``schema.KEYS`` with a ``field`` fills
  that field; the others are read here: ``quant`` and ``calibration`` become a
  :class:`QuantPlan` (recipe, normalised period, calibration), ``eval.sweeps[eval.sweep]`` a
  tuple of :class:`Setting`, ``task`` a :class:`resq_jax.tasks.Task` (:func:`task_for` the
  dataset, with the loss weights ``train.class_weights``).
  """
  validate(config, num_devices=num_devices, needs_init_from=needs_init_from)
  values = dict(flatten(config))
  parts = collections.defaultdict(dict)  # Experiment part ('' : its own fields) -> fields
  for key in KEYS:
    if key.field is not None:
      part, _, field = key.field.rpartition(".")
      parts[part][field] = _frozen(values[key.name])
  quant = {k.leaf: values[k.name] for k in KEYS if k.name.startswith("quant.")}
  cal = {k.leaf: values[k.name] for k in KEYS if k.name.startswith("calibration.")}
  del cal["num_batches"]
  task = task_for(values["task"], values["data.dataset"])
  if parts["train"]["class_weights"]:
    task = dataclasses.replace(task, class_weights=parts["train"]["class_weights"])
  sweep = values["eval.sweeps"][values["eval.sweep"]]
  return Experiment(
    **parts[""],
    task=task,
    data=DataSpec(**parts["data"]),
    model=ModelSpec(**parts["model"]),
    quant=QuantPlan(
      **parts["quant"],
      recipe=recipe_from(quant),
      period=int(quant["period"]),
      frame_precision=frame_precision_from(quant),
      calibration=CalibrationMethods(**cal),
    ),
    optim=OptimSpec(**parts["optim"]),
    train=TrainSpec(**parts["train"]),
    eval=EvalSpec(
      **parts["eval"],
      sweep=tuple(setting_from(quant, entry) for entry in sweep),
      qat_runs=tuple(d for d in values["eval.qat_runs"].split(",") if d),
    ),
    config_json=config.to_json_best_effort(indent=2),
  )


def check_device_count(experiment: Experiment, num_devices: int) -> None:
  """ConfigError unless the batch sizes divide over ``num_devices`` (after
  ``jax.distributed.initialize``, when the global count is known)."""
  found = [
    f"{key}: {v} is not divisible by the device count {num_devices} (allowed: a multiple "
    f"of {num_devices})"
    for key, v in (
      ("data.batch_size", experiment.data.batch_size),
      ("eval.batch_size", experiment.eval.batch_size),
    )
    if v % num_devices
  ]
  if found:
    raise ConfigError(found)
