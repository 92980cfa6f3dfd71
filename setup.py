"""loadtester: HTTP load generator with a Cython hot path, uvloop, httptools and SQLite (APSW)."""
import os

from setuptools import Extension, setup

DEBUG_BUILD = os.environ.get("LOADTESTER_DEBUG_BUILD") == "1"


def extensions():
    from Cython.Build import cythonize

    directives = {"language_level": "3", "embedsignature": True}
    compile_args = ["-O0", "-g3", "-UNDEBUG"] if DEBUG_BUILD else ["-O2"]
    if DEBUG_BUILD:
        directives.update(boundscheck=True, wraparound=True, linetrace=False)
    # Cython pairs engine/_engine.pyx with engine/_engine.pxd only under its
    # top-level name; the C it generates is then built as loadtester._engine
    # (the init symbol, PyInit__engine, is the same either way).
    cythonize([Extension("_engine", ["engine/_engine.pyx"])],
              compiler_directives=directives, include_path=["engine"])
    return [Extension("loadtester._engine", sources=["engine/_engine.c"],
                      include_dirs=["engine/vendor/llhttp"], extra_compile_args=compile_args)]


# Name, version, dependencies, packages and the console script are in pyproject.toml;
# here is only what it cannot say: the compiled engine and the data files shipped with it.
setup(
    package_data={"loadtester": ["_engine.pyi", "store/schema/*.sql", "web/static/*.html",
                                 "web/static/*.js", "web/static/*.css", "web/static/partials/*.html",
                                 "web/static/vendor/*"]},
    ext_modules=extensions(),
)
