"""Documented defaults of every setting (resq_jax/experiment/schema.py, the schema inside the
package: each key declared once with its default, rule and help text) plus the repository's
named evaluation sweeps (configs/sweeps.py); each experiment config starts from these.

Run: python train.py --config configs/<name>.py[:arg] --workdir DIR [--config.optim.lr=1e-3 ...]

A bad setting or an unknown key is rejected with one line per problem (``key: got VALUE
(allowed: ...)``) before any data is built or anything compiles.
"""

import ml_collections

from configs import sweeps
from resq_jax.experiment.schema import default_config


def get_config() -> ml_collections.ConfigDict:
  c = default_config()
  c.eval.sweeps = ml_collections.ConfigDict(sweeps.SWEEPS)
  c.eval.sweep = "demo"
  return c
