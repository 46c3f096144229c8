"""Named evaluation sweeps (data): each is a tuple of settings, a setting a dict of ``quant``
keys that override the config's ``quant`` section (resq_jax/config_defaults.py documents
them), plus an optional display ``name``. ``configs/default.py`` puts ``SWEEPS`` into
``eval.sweeps``; ``--config.eval.sweep=NAME`` picks one.
"""

FP = {"mode": "float", "name": "FP32"}


def fq(w: int, a: int) -> dict:
  return {"mode": "fq", "key_bits": (w, a), "name": f"FQ W{w}A{a}"}


def resq(k: int, ref_mode: str = "closed") -> dict:
  return {
    "mode": "resq",
    "key_bits": (8, 8),
    "residual_bits": (4, 4),
    "period": k,
    "ref_mode": ref_mode,
    "name": f"ResQ K={k} {ref_mode} W8A8/W4A4",
  }


def dynamic(step: float, k: int = 4) -> dict:
  return {
    "mode": "dynamic",
    "key_bits": (8, 8),
    "residual_bits": (4, 4),
    "period": k,
    "ref_mode": "closed",
    "policy": "fixed_step",
    "policy_bits": (0, 2, 4, 8),
    "policy_step": step,
    "name": f"DynResQ K={k} step={step:g}",
  }


SWEEPS = {
  "fp": (FP,),
  # FP; FQ W8A8 to W2A2; static ResQ per period and reference mode; dynamic ResQ per step.
  "demo": (
    FP,
    fq(8, 8),
    fq(6, 6),
    fq(4, 4),
    fq(2, 2),
    resq(2),
    resq(4),
    resq(8),
    resq(4, "key"),
    resq(4, "prev"),
    dynamic(1.0),
    dynamic(2.0),
    dynamic(4.0),
    dynamic(8.0),
  ),
  "tiny": (FP, fq(8, 8), resq(2), dynamic(1.0, 2)),
}
