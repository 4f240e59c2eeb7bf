"""The package's modules import each other without loops (issue 15): every intra-package import,
at module level or inside a function, is an edge of a graph that must be acyclic."""
import ast
import os
import tempfile
import unittest

_here = os.path.dirname(os.path.abspath(__file__))
PKG_DIR = os.path.normpath(os.path.join(_here, "..", "dfm"))


def package_imports(pkg_dir, pkg="dfm"):
    """{module: set of modules it imports} for the .py files of pkg_dir, names relative to the
    package ("handles", "ctmc", "__init__"). `from . import x` is an edge to module x when x is
    a module file (else to __init__); `from .m import y` and `import pkg.m` are edges to m.
    Imports of the package itself (`from . import name` of an attribute, `import pkg`) are
    edges to __init__."""
    mods = {f[:-3] for f in os.listdir(pkg_dir) if f.endswith(".py")}
    graph = {}
    for m in sorted(mods):
        with open(os.path.join(pkg_dir, m + ".py")) as fh:
            tree = ast.parse(fh.read(), filename=m + ".py")
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module is None:
                    continue
                if node.level > 1:
                    raise ValueError("%s.py: imports from above the package" % m)
                if node.level == 1:
                    base = node.module
                elif node.module == pkg or node.module.startswith(pkg + "."):
                    base = node.module[len(pkg) + 1:] or None
                else:
                    continue
                if base is None:       # from . import a, b
                    for a in node.names:
                        deps.add(a.name if a.name in mods else "__init__")
                else:
                    deps.add(base.split(".")[0])
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == pkg:
                        deps.add("__init__")
                    elif a.name.startswith(pkg + "."):
                        deps.add(a.name[len(pkg) + 1:].split(".")[0])
        deps.discard(m)
        graph[m] = deps & mods
    return graph


def find_cycle(graph):
    """One cycle as a list of modules [a, b, ..., a], or None. Edges into __init__ from the
    submodules it imports are the package's normal shape (a submodule reaching the package's
    namespace), so __init__ is treated as a sink."""
    g = {m: sorted(d - {"__init__"}) for m, d in graph.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in g.get(m, ()):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None
    for m in sorted(g):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


class TestImportGraph(unittest.TestCase):
    def test_package_has_no_import_cycle(self):
        graph = package_imports(PKG_DIR)
        self.assertIn("handles", graph)
        self.assertIn("_states", graph["ctmc"])          # the shared part of ctmc / handles
        self.assertNotIn("ctmc", graph["handles"])
        cycle = find_cycle(graph)
        self.assertIsNone(cycle, "import cycle: " + " -> ".join(cycle or []))

    def test_checker_finds_planted_cycles(self):
        """The checker itself fails on a loop, also one through a function-level import."""
        with tempfile.TemporaryDirectory() as d:
            files = {"__init__.py": "from . import a\nfrom .b import f\n",
                     "a.py": "import numpy\nfrom ._u import x\n",
                     "b.py": "from . import a\n\ndef f():\n    from .c import g\n    return g\n",
                     "c.py": "import dfm.b\n",
                     "_u.py": "from . import constants\n"}
            for name, text in files.items():
                with open(os.path.join(d, name), "w") as fh:
                    fh.write(text)
            graph = package_imports(d)
            self.assertEqual(graph["b"], {"a", "c"})
            self.assertEqual(graph["c"], {"b"})
            self.assertEqual(graph["_u"], {"__init__"})     # attribute of the package
            self.assertEqual(find_cycle(graph), ["b", "c", "b"])
            with open(os.path.join(d, "c.py"), "w") as fh:
                fh.write("from . import a\n")
            self.assertIsNone(find_cycle(package_imports(d)))


if __name__ == "__main__":
    unittest.main()
