"""loadtester: HTTP load generator with a Cython hot path, uvloop, httptools and SQLite (APSW)."""
import os

from setuptools import Extension, find_packages, setup

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


setup(
    name="loadtester",
    version="0.1.0",
    description="HTTP load generator: as fast as wrk, honest about latency, remembers every run",
    python_requires=">=3.11",
    packages=find_packages(include=["loadtester", "loadtester.*"]),
    package_data={"loadtester": ["store/schema/*.sql", "web/static/*.html", "web/static/*.js",
                                 "web/static/*.css",
                                 "web/static/vendor/*"]},
    ext_modules=extensions(),
    install_requires=[
        "uvloop>=0.19",
        "httptools>=0.7.1,<0.10",   # the llhttp ABI of engine/vendor/llhttp/llhttp.h
        "apsw>=3.45",
        "click>=8.1",
        "starlette>=0.37",
        "uvicorn>=0.30",
        "fpdf2>=2.7",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.2", "PyYAML>=6", "selenium>=4.20"],
    },
    entry_points={"console_scripts": ["loadtester=loadtester.cli:main"]},
)
