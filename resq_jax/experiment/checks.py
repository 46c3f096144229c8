"""The building blocks of the config schema (:data:`resq_jax.experiment.schema.KEYS`): the
:class:`Key` declaration, its :class:`Rule`, the :class:`Context` through which a rule's relation
reads other keys, rule constructors for ints, reals, choices, booleans and bit-width pairs, the
checks of single values, and the allowed values of the choice keys (stages, quant modes,
policies, calibration methods, the keys of an ``eval.sweeps`` setting).

Pure Python over single values.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from resq_jax.quant import calibration
from resq_jax.quant.recipe import MODES
from resq_jax.quant.spec import MAX_BITS

STAGES = ("fp", "ptq", "qat")
# quant.mode: a layer recipe's mode, or per-frame precision among FQ recipes (VideoIQ-style).
FRAME_PRECISION = "frame_precision"
QUANT_MODES = (*MODES, FRAME_PRECISION)
POLICIES = ("fixed_step", "ladder", "gate", "hold")
CALIBRATION_METHODS = calibration.CALIBRATION_METHODS
# The keys of an eval.sweeps setting that are not quant keys: display name and family.
SETTING_NAME_KEY = "name"
SETTING_FAMILY_KEY = "family"
SETTING_KEYS = (SETTING_NAME_KEY, SETTING_FAMILY_KEY)
FAMILY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,23}")

Relation = Callable[[Any, "Context"], "str | None"]


@dataclasses.dataclass(frozen=True)
class Rule:
  """How one config key is checked.

  ok: whether the value on its own is valid (type and range). allowed: what is (a string, or a
  callable for names only known at run time). relation: for a valid value, a message (ending in
  ``(allowed: ...)``) when it clashes with other keys, else None; other keys are read through
  :class:`Context`, which hides invalid ones so that one mistake is reported once.
  """

  ok: Callable[[Any], bool]
  allowed: str | Callable[[], str]
  relation: Relation | None = None

  def describe(self) -> str:
    return self.allowed() if callable(self.allowed) else self.allowed

  def accepts(self, value) -> bool:
    """``ok(value)``, False where comparing the value raises (e.g. a string with an int)."""
    try:
      return bool(self.ok(value))
    except (TypeError, ValueError, OverflowError):
      return False


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key, declared once: its dotted ``name``, ``default``, :class:`Rule` (type,
  range and relation to other keys), ``help`` text, and the field of the typed ``Experiment``
  it fills (``field``: a dotted path into ``Experiment``; ``''``, the default, means the same
  path as ``name``; ``None`` means a builder of ``parse`` reads it, e.g. the quant keys that
  make the recipe). ``aliases``: names users reach for (optax, PyTorch, the paper) that the
  unknown-key hint maps onto this key."""

  name: str
  default: Any
  rule: Rule
  help: str
  field: str | None = ""
  aliases: tuple[str, ...] = ()

  def __post_init__(self):
    if self.field == "":
      object.__setattr__(self, "field", self.name)

  @property
  def leaf(self) -> str:
    return self.name.rpartition(".")[2]


@dataclasses.dataclass(frozen=True)
class Context:
  """What a relation sees of the other keys: their values, which of them passed their own check,
  the device count (None: not known yet, multi-host before ``jax.distributed.initialize``),
  whether the caller needs an FP run (``init_from``), and the rules themselves (for the sweep
  settings, checked against the quant rules)."""

  values: dict
  valid: frozenset
  num_devices: int | None
  needs_init_from: bool
  rules: Mapping[str, Rule]

  def get(self, key: str):
    """The value of ``key`` if it passed its own check, else None."""
    return self.values[key] if key in self.valid else None


def is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_finite(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_seq(v) -> bool:
  return isinstance(v, (tuple, list))


def integer(low: int, high: int | None = None, note: str = "", relation=None) -> Rule:
  allowed = (f"int >= {low}" if high is None else f"int in [{low}, {high}]") + note
  return Rule(lambda v: is_int(v) and v >= low and (high is None or v <= high), allowed, relation)


def real(low: float, *, strict: bool, note: str = "") -> Rule:
  return Rule(
    lambda v: is_finite(v) and (v > low if strict else v >= low),
    f"finite number {'>' if strict else '>='} {low:g}{note}",
  )


def choice(
  options: Sequence[str] | Callable[[], Sequence[str]], note: str = "", relation=None
) -> Rule:
  names = options if callable(options) else (lambda: options)
  return Rule(
    lambda v: isinstance(v, str) and v in names(), lambda: " | ".join(names()) + note, relation
  )


def boolean() -> Rule:
  return Rule(lambda v: isinstance(v, bool), "True | False")


def bits(weight_low: int, act_low: int, relation=None) -> Rule:
  def ok(v):
    return (
      is_seq(v)
      and len(v) == 2
      and all(map(is_int, v))
      and weight_low <= v[0] <= MAX_BITS
      and act_low <= v[1] <= MAX_BITS
    )

  return Rule(
    ok,
    f"(weight, activation) ints, weight in [{weight_low}, {MAX_BITS}] (1-bit "
    f"signed weights {{-s, 0}} zero every positive weight), activation in "
    f"[{act_low}, {MAX_BITS}]",
    relation,
  )


def policy_bits_ok(v) -> bool:
  return (
    is_seq(v)
    and len(v) > 0
    and all(is_int(b) and (b == 0 or 2 <= b <= MAX_BITS) for b in v)
    and list(v) == sorted(set(v))
  )


def thresholds_ok(v) -> bool:
  return (
    is_seq(v)
    and len(v) > 0
    and all(is_finite(t) and t > 0 for t in v)
    and all(a < b for a, b in itertools.pairwise(v))
  )


def frame_bits_ok(v) -> bool:
  """At least two (weight, activation) pairs; neither bit-width decreases, no pair repeats."""
  if not (is_seq(v) and len(v) >= 2):
    return False
  pairs = [tuple(p) if is_seq(p) else None for p in v]
  if not all(p is not None and len(p) == 2 and all(map(is_int, p)) for p in pairs):
    return False
  if not all(2 <= w <= MAX_BITS and 1 <= a <= MAX_BITS for w, a in pairs):
    return False
  return all(b[0] >= a[0] and b[1] >= a[1] and a != b for a, b in itertools.pairwise(pairs))


def family_ok(v) -> bool:
  return isinstance(v, str) and FAMILY_PATTERN.fullmatch(v) is not None


def qat_runs_ok(v) -> bool:
  return isinstance(v, str) and (v == "" or all(d and d == d.strip() for d in v.split(",")))


def pairs(v) -> tuple:
  return tuple(tuple(p) for p in v)
