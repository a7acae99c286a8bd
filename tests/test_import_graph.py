"""The package's import graph has no cycle, function-level (lazy) imports included.

The graph is read from the source with ``ast`` (every ``import``/``from ... import`` anywhere in a
module, resolved to the deepest zslfast module it names); a module importing one of its own parent
packages is not an edge (Python imports the parents first, always). A cycle is reported as its
strongly connected component, the modules listed."""
import ast
import os

import zslfast

ROOT = os.path.dirname(os.path.abspath(zslfast.__file__))


def modules(root=ROOT):
    out = {}
    base = os.path.dirname(root)
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def import_graph(mods):
    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges = {m: set() for m in mods}
    for m, path in mods.items():
        package = m if path.endswith("__init__.py") else m.rpartition(".")[0]
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = anchor + ("." + base if base else "")
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "zslfast":
                    target = resolve(name)
                    if target and target != m and not m.startswith(target + "."):
                        edges[m].add(target)
    return edges


def cycles(edges):
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_on_a_hand_made_graph():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_the_package_has_no_import_cycle_lazy_imports_included():
    edges = import_graph(modules())
    assert "zslfast.engine.registry" in edges["zslfast.config"]  # the reader sees function-level imports
    assert cycles(edges) == []


# The bottom layers and what they may import: the distributed helpers, the operators and the network
# building blocks sit below the engine, the data, the evaluation and the methods.
BOTTOM = {
    "zslfast.distributed": ("zslfast.errors",),
    "zslfast.ops": ("zslfast._ext", "zslfast.errors", "zslfast.ops"),
    "zslfast.nn": ("zslfast.nn", "zslfast.ops", "zslfast.distributed", "zslfast.optim", "zslfast.errors",
                   "zslfast.io"),
    "zslfast.io": ("zslfast.errors",),
}


def test_the_bottom_layers_import_nothing_above_them():
    edges = import_graph(modules())
    wrong = []
    for m, targets in sorted(edges.items()):
        layer = next((b for b in BOTTOM if m == b or m.startswith(b + ".")), None)
        if layer is None:
            continue
        allowed = BOTTOM[layer]
        wrong += [f"{m} imports {t}" for t in sorted(targets)
                  if not any(t == a or t.startswith(a + ".") for a in allowed) and t != "zslfast"]
    assert not wrong, wrong


def test_methods_leave_training_and_distribution_to_the_engine():
    """No file under zslfast/models imports the distributed helpers or calls ``zero_grad``,
    ``backward`` or an optimiser's ``step``: the engine steps the optimisers of a loss stage, and a
    manual step (a GAN's, GRW's) steps through the ``Optimizers`` it is handed (``opt.step(loss,
    *names)``, the one ``.step`` call allowed, on the step's ``opt``/``opts`` argument)."""
    problems = []
    for name, path in sorted(modules().items()):
        if not name.startswith("zslfast.models."):
            continue
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                named = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                problems += [f"{name}:{node.lineno} imports {n}" for n in named if n.startswith("zslfast.distributed")]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                attr, owner = node.func.attr, node.func.value
                if attr in ("zero_grad", "backward") or (
                        attr == "step" and not (isinstance(owner, ast.Name) and owner.id in ("opt", "opts"))):
                    problems.append(f"{name}:{node.lineno} calls .{attr}()")
    assert not problems, problems
