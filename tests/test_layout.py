"""The package's import graph (built with ``ast`` from every import, module-level or inside a
function): no cycles, and each subpackage imports only the floors below it (docs/design.md
section 1 draws the same graph)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "resq_jax"

# What each top-level part of resq_jax may import from the project. Reading down the list, each
# part builds only on parts above it: quant (pure math) <- nn (Flax) <- tasks / training <-
# experiment (everything that reads a config) <- stream (the video application).
ALLOWED = {
  "errors": set(),
  "ops": set(),
  "quant": set(),
  "evaluation": set(),
  "interop": set(),
  "data": {"errors"},
  "nn": {"quant", "ops"},
  "tasks": {"data", "evaluation"},
  "training": {"errors"},
  "experiment": {
    "errors",
    "ops",
    "quant",
    "evaluation",
    "interop",
    "data",
    "nn",
    "tasks",
    "training",
  },
  "stream": {
    "errors",
    "ops",
    "quant",
    "evaluation",
    "interop",
    "data",
    "nn",
    "tasks",
    "training",
    "experiment",
  },
  # The public face re-exports the library's core (never the config-driven layers).
  "__init__": {"nn", "quant", "interop"},
}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for f in ROOT.rglob("*.py"):
    parts = ["resq_jax", *f.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = f
  return out


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
  """The project modules ``name`` imports (a package's ``from pkg import mod`` counts as
  ``pkg.mod``); a module never depends on its own parent packages."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        found.add(sub if sub in modules else node.module)
    elif isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
  return {d for d in found if d in modules and d != name and not name.startswith(d + ".")}


def _graph():
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def _part(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph) -> list[list[str]]:
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(graph[m]):
      if state.get(d) == "open":
        cycles.append(stack[stack.index(d) :] + [d])
      elif d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)
  return cycles


def test_hand_made_graph_finds_cycles_and_parts():
  """The checker itself on a graph with a known cycle (the oracle is the hand-drawn graph)."""
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert _cycles(graph) == [["a", "b", "c", "a"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []
  assert _part("resq_jax") == "__init__"
  assert _part("resq_jax.nn.runner") == "nn"


def test_no_import_cycles():
  assert _cycles(_graph()) == []


def test_every_part_is_known_and_imports_only_lower_floors():
  graph = _graph()
  assert {_part(m) for m in graph} == set(ALLOWED)
  upward = sorted(
    f"{m} -> {d}"
    for m, deps in graph.items()
    for d in deps
    if _part(d) != _part(m) and _part(d) not in ALLOWED[_part(m)]
  )
  assert upward == []


def test_allowed_map_is_a_partial_order():
  """No two parts may import each other, even through other parts (the floors are a DAG)."""
  graph = {part: set(deps) for part, deps in ALLOWED.items()}
  assert _cycles(graph) == []
